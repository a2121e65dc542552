"""``RayCluster``: run queued jobs as Ray tasks on a cluster, with the local ``run_job``'s contract.

``RayCluster.run_job`` blocks like ``mono_quant_core.jobs.run_job`` and returns the
same ``JobOutcome``; several threads may call it at once (one per running job).  It
submits :func:`remote.execute` as a Ray task, polls the cluster's event hub for the
job's progress and log lines (delivered on the calling thread), cancels the task
when ``cancel`` is set, retries a task whose worker died, and writes the returned
output bytes atomically at ``job.output`` (docs/queue.md, "Running on a Ray cluster").
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections.abc import Callable
from types import ModuleType
from typing import Any

from ..errors import Cancelled, ClusterError
from ..jobs import Job, JobOutcome
from ..progress import CancelLike, ProgressFn, check_cancel
from . import connection, files, remote
from .connection import LOCAL, ClusterInfo

EventFn = Callable[[str, str], None]
#: How often the calling thread looks for a job's events and its end.
POLL_S = 0.2
#: After a cancel, how long to wait for Ray to see the killed worker's task end.
CANCEL_GRACE_S = 2.0
#: Ray errors that mean the worker (or its node) went away: the job is retried.
_DEATHS = ("WorkerCrashedError", "NodeDiedError", "LocalRayletDiedError", "ObjectLostError", "OwnerDiedError")

_active_lock = threading.Lock()
_active: RayCluster | None = None


def connected_info(address: str) -> ClusterInfo | None:
    """The info of the cluster this process is connected to at ``address``, else None."""
    with _active_lock:
        cluster = _active
    if cluster is not None and cluster.address == address and cluster._info is not None:
        return cluster._info
    return None


class RayCluster:
    """A connection to a Ray cluster that runs jobs; ``address`` is local, auto, ray://host:port or host:port.

    ``local`` starts a private Ray instance bound to 127.0.0.1 (``num_cpus`` CPUs, default all)
    and stops it on :meth:`close`.  ``retries``: how many times a job whose worker died is run
    again.  ``concurrency``: how many jobs callers should run at once (None: the cluster's free
    CPUs, or GPUs for CUDA jobs).  ``ship_files``: always send the inputs through the object store,
    even to a worker that sees the same paths.
    """

    def __init__(
        self,
        address: str,
        *,
        retries: int = 1,
        concurrency: int | None = None,
        num_cpus: int | None = None,
        ship_files: bool = False,
    ) -> None:
        self.address = connection.check_address(address)
        if retries < 0:
            raise ClusterError(f"{address}: retries must be >= 0, got {retries}", address)
        if concurrency is not None and concurrency < 1:
            raise ClusterError(f"{address}: concurrency must be >= 1, got {concurrency}", address)
        self.retries = retries
        self.concurrency = concurrency
        self.num_cpus = num_cpus
        self.ship_files = ship_files
        self._lock = threading.RLock()
        self._info: ClusterInfo | None = None
        self._hub: Any = None
        self._task: Any = None
        self._shipped: dict[tuple[str, int, str], Any] = {}
        self._shipped_users: dict[tuple[str, int, str], int] = {}

    # -- connection ---------------------------------------------------------------------
    def connect(self, timeout_s: float = 15.0) -> ClusterInfo:
        """Connect (once; later calls return the same info); a ClusterError when the cluster cannot be used."""
        global _active
        with self._lock:
            if self._info is not None:
                return self._info
            ray = connection.import_ray(self.address)
            with _active_lock:
                if _active is not None and _active is not self:
                    raise ClusterError(
                        f"{self.address}: this process is already connected to the Ray cluster at "
                        f"{_active.address}; close that connection first",
                        self.address,
                    )
                if ray.is_initialized():
                    raise ClusterError(
                        f"{self.address}: this process already has a Ray connection that mono-quant did not open",
                        self.address,
                    )
                _active = self
            try:
                _import_writers()
                if self.address == LOCAL:
                    connection.local_loopback(ray)
                else:
                    connection.probe(self.address, timeout_s)
                kwargs = connection.init_kwargs(self.address, self.num_cpus)
                if self.address == LOCAL:
                    connection.start_local(ray, self.address, kwargs)
                else:
                    connection.connect_in_thread(ray, self.address, kwargs, timeout_s)
                self._hub = ray.remote(num_cpus=0)(remote.EventHub).remote()
                self._task = ray.remote(max_retries=0, retry_exceptions=False)(remote.execute)
                self._info = connection.cluster_info(ray, self.address)
            except BaseException:
                self._disconnect(ray)
                raise
            return self._info

    @property
    def info(self) -> ClusterInfo:
        """The cluster's size when connected (connects first)."""
        return self.connect()

    def default_concurrency(self, job: Job | None = None) -> int:
        """``concurrency`` when given, else the cluster's free CPUs (GPUs for a CUDA job) per job, at least 1."""
        if self.concurrency is not None:
            return self.concurrency
        ray = self._ray()
        free = ray.available_resources()
        cpus, gpus = _resources(job)
        if gpus:
            return max(1, int(free.get("GPU", 0.0) // gpus))
        return max(1, int(free.get("CPU", 0.0) // cpus))

    def close(self) -> None:
        """Disconnect; a private local instance is stopped."""
        with self._lock:
            if self._info is None and self._hub is None:
                return
            self._disconnect(connection.import_ray(self.address))

    def _disconnect(self, ray: ModuleType) -> None:
        global _active
        self._info, self._hub, self._task = None, None, None
        self._shipped.clear()
        self._shipped_users.clear()
        with _active_lock:
            if _active is self:
                _active = None
                if ray.is_initialized():
                    ray.shutdown()

    def __enter__(self) -> RayCluster:
        self.connect()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _ray(self) -> ModuleType:
        self.connect()
        return connection.import_ray(self.address)

    # -- jobs ---------------------------------------------------------------------------
    def run_job(
        self,
        job: Job,
        progress: ProgressFn | None = None,
        cancel: CancelLike | None = None,
        on_event: EventFn | None = None,
    ) -> JobOutcome:
        """Run ``job`` on the cluster; blocks and returns what ``mono_quant_core.jobs.run_job`` returns.

        ``progress(done, total, message)`` and ``on_event(kind, text)`` (kinds ``host``, ``log``,
        ``retry``) are called on this thread.  The job's own errors are raised as a local run raises
        them; a worker that died more than ``retries`` times is a ClusterError; ``cancel`` set ends the
        remote task and raises Cancelled.
        """
        from ..jobs.run import _check_inputs

        started = time.perf_counter()
        job.validate()
        check_cancel(cancel)
        _check_inputs(job)  # the caller's files and output folder, before any remote work
        ray = self._ray()
        man = files.manifest(job, cancel)
        shipped: dict[str, Any] | None = self._ship(ray, man, cancel) if self.ship_files else None
        try:
            result = self._attempts(ray, job, man, shipped, progress, cancel, on_event)
            if isinstance(result, remote.NeedFiles):
                _say(on_event, "log", f"inputs: the worker does not see {result.missing[0]}; shipping the inputs")
                shipped = self._ship(ray, man, cancel)
                result = self._attempts(ray, job, man, shipped, progress, cancel, on_event)
        finally:
            if shipped is not None:
                self._unship(man)
        if isinstance(result, remote.Failed):
            if result.report_text is not None and job.report_path is not None:
                from ..jobs.text_files import write_text_atomic

                write_text_atomic(job.report_path, result.report_text)
            raise remote.rebuild_error(result)
        assert isinstance(result, remote.Done)
        return self._write(job, result, time.perf_counter() - started)

    def _attempts(
        self,
        ray: ModuleType,
        job: Job,
        man: files.Manifest,
        shipped: dict[str, Any] | None,
        progress: ProgressFn | None,
        cancel: CancelLike | None,
        on_event: EventFn | None,
    ) -> Any:
        """Run the task, again after a worker's death, up to ``retries`` more times."""
        from .. import __version__

        cpus, gpus = _resources(job)
        for attempt in range(self.retries + 1):
            job_id = uuid.uuid4().hex
            ref = self._task.options(num_cpus=cpus, num_gpus=gpus).remote(
                job, man, shipped, self._hub, job_id, __version__
            )
            try:
                return self._wait(ray, ref, job_id, progress, cancel, on_event)
            except Exception as exc:
                if type(exc).__name__ not in _DEATHS:
                    if isinstance(exc, ray.exceptions.RayError):
                        raise ClusterError(f"{self.address}: {_job_name(job)}: {_reason(exc)}", self.address) from None
                    raise
                reason = _reason(exc)
                if attempt == self.retries:
                    tries = "once" if attempt == 0 else f"{attempt + 1} times"
                    raise ClusterError(
                        f"{self.address}: {_job_name(job)}: the worker running it died ({reason}); tried {tries}",
                        self.address,
                    ) from None
                _say(
                    on_event,
                    "retry",
                    f"the worker died ({reason}); running the job again (retry {attempt + 1} of {self.retries})",
                )
        raise AssertionError("unreachable")

    def _wait(
        self,
        ray: ModuleType,
        ref: Any,
        job_id: str,
        progress: ProgressFn | None,
        cancel: CancelLike | None,
        on_event: EventFn | None,
    ) -> Any:
        """Deliver the task's events until it ends; on cancel, end it and raise Cancelled."""
        while True:
            ready, _ = ray.wait([ref], timeout=POLL_S)
            if not ready and cancel is not None and cancel.is_set():
                self._cancel(ray, ref)
                self._deliver(ray, job_id, progress, on_event)
                raise Cancelled("cancelled by the user")
            if ready:
                try:
                    return ray.get(ref)
                finally:
                    self._deliver(ray, job_id, progress, on_event)
            self._deliver(ray, job_id, progress, on_event)

    def _cancel(self, ray: ModuleType, ref: Any) -> None:
        """End the task by killing its worker process (force), then give Ray a moment to record it.

        A polite cancel (KeyboardInterrupt in the task) can land in the middle of an import,
        leaving the worker's modules half initialised for the next job it would run; a killed
        worker is replaced by a fresh one.  Its temporary folder is removed by the next job
        on that machine (``remote.remove_stale_folders``).
        """
        ray.cancel(ref, force=True)
        ray.wait([ref], timeout=CANCEL_GRACE_S)

    def _deliver(self, ray: ModuleType, job_id: str, progress: ProgressFn | None, on_event: EventFn | None) -> None:
        for kind, payload in ray.get(self._hub.take.remote(job_id)):
            if kind == "progress":
                if progress is not None:
                    progress(*payload)
            else:
                _say(on_event, kind, str(payload))

    # -- files --------------------------------------------------------------------------
    def _ship(self, ray: ModuleType, man: files.Manifest, cancel: CancelLike | None = None) -> dict[str, Any]:
        """Every input's bytes in the object store (each file once while jobs use it): path -> ref.

        ``cancel`` is checked between files; a cancelled or failed shipping lets go of what it put."""
        refs = {}
        taken: list[files.InputFile] = []
        try:
            for f in man.files:
                check_cancel(cancel)
                key = (f.path, f.size, f.sha256)
                with self._lock:
                    if key not in self._shipped:
                        self._shipped[key] = ray.put(files.read_bytes(f.path))
                    self._shipped_users[key] = self._shipped_users.get(key, 0) + 1
                    refs[f.path] = self._shipped[key]
                taken.append(f)
        except BaseException:
            self._unship(files.Manifest(tuple(taken), man.roots))
            raise
        return refs

    def _unship(self, man: files.Manifest) -> None:
        with self._lock:
            for f in man.files:
                key = (f.path, f.size, f.sha256)
                users = self._shipped_users.get(key, 0) - 1
                if users <= 0:
                    self._shipped_users.pop(key, None)
                    self._shipped.pop(key, None)  # dropping the ref frees the object
                else:
                    self._shipped_users[key] = users

    def _write(self, job: Job, done: remote.Done, elapsed_s: float) -> JobOutcome:
        """The output files, written atomically beside ``job.output`` (the main file or index last)."""
        from ..jobs.text_files import write_text_atomic
        from ..serialization.read import resolve
        from ..serialization.sharded import write_file_set

        write_file_set(job.output, done.files, done.main_file)
        if job.report_path is not None and done.report_text is not None:
            write_text_atomic(job.report_path, done.report_text)
        return JobOutcome(
            job=job,
            output=resolve(job.output),
            file_bytes=done.file_bytes,
            report=done.report,
            report_path=job.report_path,
            elapsed_s=elapsed_s,
        )


def _import_writers() -> None:
    """Import what ``run_job`` uses on the caller's side once, on one thread: two job threads importing
    the serialization package for the first time at once can see it half initialised."""
    from ..jobs import run, text_files  # noqa: F401
    from ..serialization import read, sharded  # noqa: F401


def _resources(job: Job | None) -> tuple[float, float]:
    """(CPUs, GPUs) one job asks for: a GPU when its device names CUDA."""
    if job is not None and job.config.device.startswith("cuda"):
        return 1.0, 1.0
    return 1.0, 0.0


def _job_name(job: Job) -> str:
    return os.path.basename(job.output)


def _reason(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text[:300]}" if text else type(exc).__name__


def _say(on_event: EventFn | None, kind: str, text: str) -> None:
    if on_event is not None:
        on_event(kind, text)
