"""What runs on a Ray worker: one job through ``mono_quant_core.jobs.run_job``, and the event hub.

The task (:func:`execute`) never writes at the job's output path: it writes into a
temporary folder of the worker and returns the files' bytes, which the caller writes
atomically (``runner.py``).  Progress and log lines go to :class:`EventHub`, a small
actor the caller polls.  The job's own errors come back as values (:class:`Failed`),
never as Ray task errors, so that only a worker's death is a Ray error and retried.
"""

from __future__ import annotations

import builtins
import os
import pickle
import socket
import tempfile
import time
import traceback
from collections import defaultdict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..errors import ClusterError, MonoQuantError, ValidationFailed
from ..jobs import Job
from . import files as input_files

if TYPE_CHECKING:
    from ..report import QuantReport

#: A job's temporary folder on a worker: ``mono-quant-job-<pid>-<random>`` in the temp folder.
FOLDER_PREFIX = "mono-quant-job-"
#: Seconds between two progress events of one job (log lines are never held back).
PROGRESS_INTERVAL = 0.1
Event = tuple[str, Any]


class EventHub:
    """A Ray actor holding each running job's events until the caller takes them (one per RayCluster)."""

    def __init__(self) -> None:
        self._events: dict[str, list[Event]] = defaultdict(list)

    def push(self, job_id: str, events: list[Event]) -> None:
        self._events[job_id].extend(events)

    def take(self, job_id: str) -> list[Event]:
        return self._events.pop(job_id, [])


@dataclass
class NeedFiles:
    """The worker does not see the caller's files: ship them (``missing`` lists some of them)."""

    missing: list[str]


@dataclass
class Done:
    """The job ran: its output files' bytes (by file name), the report, and the report file's text."""

    files: dict[str, bytes]
    main_file: str
    file_bytes: int
    report: QuantReport
    report_text: str | None
    host: str


@dataclass
class Failed:
    """The job raised: enough to raise the same error on the caller's side."""

    module: str
    name: str
    message: str
    attributes: dict[str, Any] = field(default_factory=dict)
    report_text: str | None = None
    details: str = ""


class _Events:
    """Sends a job's events to the hub: progress at most every PROGRESS_INTERVAL, log lines at once."""

    def __init__(self, hub: Any, job_id: str) -> None:
        self._hub, self._job_id = hub, job_id
        self._pending: tuple[int, int, str] | None = None
        self._last = 0.0

    def send(self, kind: str, payload: Any) -> None:
        self._flush_progress()
        self._hub.push.remote(self._job_id, [(kind, payload)])

    def progress(self, done: int, total: int, message: str) -> None:
        self._pending = (done, total, message)
        now = time.monotonic()
        if now - self._last >= PROGRESS_INTERVAL or (total and done >= total):
            self._flush_progress()

    def _flush_progress(self) -> None:
        if self._pending is not None:
            self._last = time.monotonic()
            self._hub.push.remote(self._job_id, [("progress", self._pending)])
            self._pending = None

    def close(self) -> None:
        """Deliver what is pending and wait until the hub has it, so the caller sees it before the result."""
        import ray

        pending = [("progress", self._pending)] if self._pending is not None else []
        self._pending = None
        ray.get(self._hub.push.remote(self._job_id, pending))


def execute(
    job: Job,
    manifest: input_files.Manifest,
    shipped: dict[str, Any] | None,
    hub: Any,
    job_id: str,
    version: str,
) -> NeedFiles | Done | Failed:
    """Run ``job`` on this worker (the body of the Ray task)."""
    from .. import __version__

    events = _Events(hub, job_id)
    host = socket.gethostname()
    events.send("host", host)
    try:
        if version != __version__:
            raise ClusterError(
                f"{host}: the worker has mono-quant {__version__}, this computer {version}; "
                "install the same version on every node"
            )
        missing = input_files.differences(manifest.files) if shipped is None else []
        if shipped is None and missing:
            return NeedFiles(missing[:5])
        remove_stale_folders()
        with tempfile.TemporaryDirectory(prefix=f"{FOLDER_PREFIX}{os.getpid()}-") as folder:
            return _run_here(job, manifest, shipped, folder, events, host)
    except MonoQuantError as exc:
        return _failed(exc, {})
    finally:
        events.close()


def remove_stale_folders() -> None:
    """Remove the temporary folders of jobs whose worker process is gone (killed by a cancel or a crash)."""
    import shutil

    base = tempfile.gettempdir()
    try:
        names = [n for n in os.listdir(base) if n.startswith(FOLDER_PREFIX)]
    except OSError:
        return
    for name in names:
        pid = name[len(FOLDER_PREFIX) :].split("-", 1)[0]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(os.path.join(base, name), ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # someone else's process
    return True


def _run_here(
    job: Job, manifest: input_files.Manifest, shipped: dict[str, Any] | None, folder: str, events: _Events, host: str
) -> Done | Failed:
    from ..jobs import run_job

    paths: dict[str, str] = {}  # the worker's path -> the caller's, to say errors with the caller's paths
    changes: dict[str, Any] = {}
    if shipped is None:
        events.send("log", f"inputs: {host} sees the same files at the same paths (shared filesystem)")
    else:
        import ray

        contents = dict(zip(shipped, ray.get(list(shipped.values())), strict=True))
        roots = input_files.materialize(manifest, contents, os.path.join(folder, "in"))
        events.send(
            "log",
            f"inputs: {len(manifest.files)} files ({manifest.total_bytes / 1e6:.1f} MB) shipped to {host} "
            "through Ray's object store into a temporary folder (the worker does not see them at the same paths)",
        )
        callers = dict(manifest.roots)
        for role, field_name in (
            ("script", "script"),
            ("checkpoint", "checkpoint"),
            ("calibration", "calibration_folder"),
        ):
            if role in roots:
                changes[field_name] = roots[role]
                paths[roots[role]] = callers[role]
    out = os.path.join(folder, "out")
    os.mkdir(out)
    changes["output"] = os.path.join(out, os.path.basename(job.output))
    paths[changes["output"]] = job.output
    if job.report_path is not None:
        changes["report_path"] = os.path.join(folder, "report", os.path.basename(job.report_path))
        os.mkdir(os.path.dirname(changes["report_path"]))
        paths[changes["report_path"]] = job.report_path
    here = job.replace(**changes)
    try:
        outcome = run_job(here, progress=events.progress)
    except Exception as exc:
        return _failed(exc, paths, _read_text(here.report_path))
    produced = {name: input_files.read_bytes(os.path.join(out, name)) for name in sorted(os.listdir(out))}
    return Done(
        files=produced,
        main_file=os.path.basename(outcome.output),
        file_bytes=outcome.file_bytes,
        report=outcome.report,
        report_text=_read_text(here.report_path),
        host=host,
    )


def _read_text(path: str | None) -> str | None:
    if path is None or not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8") as f:
        return f.read()


def _caller_paths(text: str, paths: dict[str, str]) -> str:
    for worker_path in sorted(paths, key=len, reverse=True):
        text = text.replace(worker_path, paths[worker_path])
    return text


def _failed(exc: BaseException, paths: dict[str, str], report_text: str | None = None) -> Failed:
    """``exc`` as a value: its class, its message with the caller's paths, its picklable attributes."""
    attributes = {}
    for key, value in vars(exc).items():
        if isinstance(exc, ValidationFailed) and key == "result":
            continue  # the quantized model: not worth sending back
        try:
            pickle.dumps(value)
        except Exception:
            continue
        attributes[key] = _caller_paths(value, paths) if isinstance(value, str) else value
    return Failed(
        module=type(exc).__module__,
        name=type(exc).__qualname__,
        message=_caller_paths(str(exc), paths),
        attributes=attributes,
        report_text=report_text,
        details=_caller_paths("".join(traceback.format_exception(exc)), paths),
    )


def rebuild_error(failed: Failed) -> BaseException:
    """The caller's copy of a worker's error: the same class and message where the class is ours or built in."""
    import importlib

    cls: Any = None
    if failed.module == "builtins":
        cls = getattr(builtins, failed.name, None)
    elif failed.module.startswith("mono_quant_core"):
        cls = getattr(importlib.import_module(failed.module), failed.name, None)
    if not (isinstance(cls, type) and issubclass(cls, BaseException)):
        return RuntimeError(f"{failed.module}.{failed.name}: {failed.message}")
    exc = cls.__new__(cls)
    exc.args = (failed.message,)
    for key, value in failed.attributes.items():
        setattr(exc, key, value)
    if isinstance(exc, ValidationFailed) and not hasattr(exc, "result"):
        exc.result = None
    return exc
