"""``mono-quant run JOB.toml ...``: run job files one after another; a failed job does not stop the rest.

With ``--ray ADDRESS`` the jobs run as Ray tasks on a cluster, ``--concurrency`` at a
time (mono_quant_core.cluster); the summary, the output files and the exit status are
the same as a local run's.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, TextIO, cast

from ..errors import ConfigError, MonoQuantError
from ..jobs import load_job, run_job
from ..progress import CancelToken
from .arguments import add_debug, add_ray, positive_int, ray_retries
from .progress_line import ProgressPrinter
from .results import JobRow, print_warnings, summary_table

if TYPE_CHECKING:
    from ..cluster import RayCluster

EXAMPLES = """\
examples:
  mono-quant run job.toml
  mono-quant run jobs/*.toml                 # every job, then a summary table
  mono-quant run a.toml b.toml --json > summary.json
  mono-quant run --ray local jobs/*.toml     # on a private local Ray instance, one job per CPU at a time
  mono-quant run --ray ray://head:10001 --concurrency 8 jobs/*.toml

A job file is TOML with the sections [model], [quantization], [calibration],
[validation] and [output]; write one with: mono-quant quantize ... --save-job job.toml

exit status: 0 every job done, 1 at least one job failed, 2 bad usage
"""


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``run``."""
    p = commands.add_parser(
        "run", help="run job files", epilog=EXAMPLES, description="Run each job file in turn and print a summary."
    )
    p.set_defaults(command=run)
    p.add_argument("jobs", nargs="+", metavar="JOB.toml", help="job files, run in the order given")
    p.add_argument("--json", action="store_true", help="print the summary as JSON on stdout instead of a table")
    ray = add_ray(p, "the jobs")
    ray.add_argument(
        "--concurrency",
        type=positive_int,
        metavar="N",
        help="with --ray: run N jobs at once (default: the cluster's free CPUs, GPUs for CUDA jobs)",
    )
    add_debug(p)


def run(args: argparse.Namespace) -> int:
    """Run every job, print the summary; 1 when any job failed."""
    retries = ray_retries(args)
    if args.ray is not None:
        rows = _run_on_cluster(args, retries)
    elif args.concurrency is not None:
        raise ConfigError(
            "--concurrency: runs jobs at once on a Ray cluster; give --ray ADDRESS too", key="--concurrency"
        )
    else:
        rows = [_run_one(path, index, len(args.jobs), args.debug) for index, path in enumerate(args.jobs)]
    if args.json:
        print(json.dumps([row.to_dict() for row in rows], indent=2))
    else:
        print(summary_table(rows))
    return 0 if all(row.status == "done" for row in rows) else 1


def _run_on_cluster(args: argparse.Namespace, retries: int) -> list[JobRow]:
    """The jobs on the cluster at ``--ray``, ``--concurrency`` at a time; rows in the order given."""
    from ..cluster import RayCluster

    cluster = RayCluster(args.ray, retries=retries, concurrency=args.concurrency)
    try:
        info = cluster.connect()
        workers = _concurrency(cluster, args.jobs)
        print(
            f"mono-quant: Ray cluster at {args.ray}: {info.nodes} node(s), {info.cpus:g} CPUs, {info.gpus:g} GPUs; "
            f"running {min(workers, len(args.jobs))} job(s) at a time",
            file=sys.stderr,
        )
        lock = threading.Lock()
        count = len(args.jobs)

        cancel = CancelToken()  # Ctrl-C: the running remote jobs are cancelled, the waiting ones dropped

        def one(item: tuple[int, str]) -> JobRow:
            index, path = item
            return _run_one(
                path, index, count, args.debug, cluster=cluster, lock=lock, plain=workers > 1, cancel=cancel
            )

        pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="mono-quant-job")
        try:
            futures = [pool.submit(one, item) for item in enumerate(args.jobs)]
            return [future.result() for future in futures]
        except KeyboardInterrupt:
            cancel.cancel()
            pool.shutdown(wait=True, cancel_futures=True)
            raise
        finally:
            pool.shutdown(wait=True)
    finally:
        cluster.close()


def _concurrency(cluster: RayCluster, paths: list[str]) -> int:
    """Jobs at once: ``--concurrency``, else what the cluster's free CPUs (GPUs for CUDA jobs) allow
    for the most demanding job (a job file that does not load fails in its own row later)."""
    jobs = []
    for path in paths:
        try:
            jobs.append(load_job(path))
        except Exception:
            continue
    return min((cluster.default_concurrency(job) for job in jobs), default=cluster.default_concurrency())


def _run_one(
    path: str,
    index: int,
    count: int,
    debug: bool,
    *,
    cluster: RayCluster | None = None,
    lock: threading.Lock | None = None,
    plain: bool = False,
    cancel: CancelToken | None = None,
) -> JobRow:
    """Run one job file (on ``cluster`` when given); every error of that job (even a bug) becomes its row,
    not the end of the batch.  ``plain``: progress as lines, not a redrawn bar (jobs run at once)."""
    stream = cast(TextIO, _Locked(sys.stderr, lock)) if lock is not None else sys.stderr
    printer = ProgressPrinter(stream, tty=False) if plain else ProgressPrinter(stream)
    printer.label = f"{path}: " if count > 1 else ""
    started = time.perf_counter()
    try:
        job = load_job(path)
        printer(0, 0, f"job {index + 1} of {count}")
        if cluster is not None:
            events = _event_printer(path, printer, stream)
            outcome = cluster.run_job(job, progress=printer, cancel=cancel, on_event=events)
        else:
            outcome = run_job(job, progress=printer)
    except Exception as exc:
        printer.finish()
        if debug:
            import traceback

            traceback.print_exc()
        message = str(exc) if isinstance(exc, MonoQuantError) else f"{type(exc).__name__}: {exc}"
        # Errors about the job file itself already start with its name.
        message = message.removeprefix(f"{path}: ")
        print(f"mono-quant: error: {path}: {message}", file=stream)
        return JobRow(job=path, status="failed", error=message, elapsed_s=time.perf_counter() - started)
    printer.finish()
    if lock is not None:
        with lock:
            print_warnings(outcome.report)
    else:
        print_warnings(outcome.report)
    return JobRow(
        job=path,
        status="done",
        output=outcome.output,
        output_sqnr_db=outcome.report.output_sqnr_db,
        file_bytes=outcome.file_bytes,
        elapsed_s=outcome.elapsed_s,
    )


def _event_printer(path: str, printer: ProgressPrinter, stream: TextIO) -> Callable[[str, str], None]:
    """A cluster job's events on stderr: its host as a progress line, a retry as a warning line."""

    def on_event(kind: str, text: str) -> None:
        if kind == "host":
            printer(0, 0, f"running on {text}")
        elif kind == "retry":
            print(f"mono-quant: warning: {path}: {text}", file=stream)

    return on_event


class _Locked:
    """A text stream whose writes from several job threads do not interleave within a line."""

    def __init__(self, stream: TextIO, lock: threading.Lock) -> None:
        self._stream, self._lock = stream, lock

    def write(self, text: str) -> int:
        with self._lock:
            return self._stream.write(text)

    def flush(self) -> None:
        with self._lock:
            self._stream.flush()

    def isatty(self) -> bool:
        return False
