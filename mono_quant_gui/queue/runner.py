"""Runs the queue: on this computer one job at a time, or on a Ray cluster several at once.

Each job calls :func:`mono_quant_core.jobs.run_job`, the function behind
``mono-quant run``, so a queued job writes the same tensors as the command
line.  On this computer (the default) the jobs run one after another on the
queue's own worker thread.  With a :class:`~.target.QueueTarget` that names a
Ray cluster, the queue connects on a worker thread (a wrong address fails
there, with the engine's message, and the jobs stay queued), then runs up to
the target's concurrency of jobs at once, each on its own worker thread
calling ``RayCluster.run_job``; each remote job reports its host and progress.

A failed job is marked and the run goes on; :meth:`QueueRunner.stop` cancels
every running job at its next cancel check and ends the run.  The target is
read whenever a job is about to start: switching it while jobs run lets them
finish where they are, and the next jobs run at the new place.  Signals are
delivered on the GUI thread.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass
from functools import partial
from typing import Any

from PySide6.QtCore import QObject, Signal, Slot

from mono_quant_core.report import format_db
from mono_quant_gui.queue import output_claims, remote
from mono_quant_gui.queue.entry import CANCELLED, DONE, FAILED, QUEUED, RUNNING, QueueEntry
from mono_quant_gui.queue.model import QueueModel
from mono_quant_gui.queue.target import LOCAL, MAX_CONCURRENCY, QueueTarget
from mono_quant_gui.run.worker import Runner, Task, TaskContext
from mono_quant_gui.window.formatting import format_bytes

log = logging.getLogger("mono_quant_gui.queue")

TASK_KIND = "queue-job"
CLOSED = "interrupted: mono-quant was closed while this job ran, so it is queued again"


def run_job_task(ctx: TaskContext, job: Any) -> Any:
    """Worker-thread side: ``run_job(job)`` with the task's progress callback and cancel token."""
    from mono_quant_core.jobs import run_job

    return run_job(job, progress=ctx.progress, cancel=ctx.cancel)


def outcome_summary(outcome: Any) -> str:
    """``done in 1.2 s: output SQNR 41.3 dB, 12.5 KiB`` (plus the number of warnings)."""
    report = outcome.report
    text = (
        f"done in {outcome.elapsed_s:.1f} s: output SQNR {format_db(report.output_sqnr_db)}, "
        f"{format_bytes(outcome.file_bytes)}"
    )
    if report.warnings:
        text += f", {len(report.warnings)} warning(s): " + "; ".join(report.warnings)
    return text


@dataclass
class _Running:
    """A job being run: on which worker, locally or remotely, and the output it claimed."""

    worker: Runner
    output: str
    remote: bool


class _Events(QObject):
    """Carries a remote job's ``on_event(kind, text)`` from its worker thread to the GUI thread."""

    happened = Signal(str, str, str)  # entry id, kind ("host" | "log" | "retry"), text


class QueueRunner(QObject):
    """Runs the model's queued jobs, on this computer or on the Ray cluster of :attr:`target`.

    Signals (GUI thread): ``started(id)``, ``progress(id, done, total, message)``,
    ``finished(id, JobOutcome)``, ``errored(id, message, details)``,
    ``cancelled(id)``, ``running_changed(bool)`` (a run began or ended),
    ``host_changed(id, host)`` (where a job runs), ``connected(ClusterInfo, concurrency)``,
    ``connect_failed(message, details)`` (the run ended; the jobs stay queued) and
    ``disconnected()``.

    ``cluster_factory(address, concurrency or None)`` makes the cluster object on a worker
    thread (default: ``mono_quant_core.cluster.RayCluster``; tests inject fakes).
    """

    started = Signal(str)
    progress = Signal(str, int, int, str)
    finished = Signal(str, object)
    errored = Signal(str, str, str)
    cancelled = Signal(str)
    running_changed = Signal(bool)
    host_changed = Signal(str, str)
    connected = Signal(object, int)
    connect_failed = Signal(str, str)
    disconnected = Signal()

    def __init__(
        self, model: QueueModel, parent: QObject | None = None, cluster_factory: remote.ClusterFactory | None = None
    ):
        super().__init__(parent)
        self.model = model
        self.cluster_factory: remote.ClusterFactory = cluster_factory or remote.ray_cluster
        #: Where the next job runs (Preferences → Queue); read each time a job is about to start.
        self.target: QueueTarget = LOCAL
        self._worker = self._new_worker()  # local jobs: its own QThread, independent of the window's runner
        self._slots: list[Runner] = []  # remote jobs: one thread each, made as the concurrency needs them
        self._control: Runner | None = None  # connecting and disconnecting
        self._events = _Events(self)
        self._events.happened.connect(self._on_event)
        self._jobs: dict[str, _Running] = {}
        self._active = False
        self._open = False  # running_changed(True) was sent and running_changed(False) not yet
        self._connection: remote.Connection | None = None
        self._connected_to: tuple[str, int] | None = None  # (address, concurrency setting) of the connection
        self._connecting: tuple[str, int] | None = None

    @property
    def running(self) -> bool:
        """True from ``run_all`` until the run ends (nothing queued, or stopped and every job ended)."""
        return self._active or bool(self._jobs) or self._connecting is not None

    @property
    def current_id(self) -> str | None:
        """The id of the (first) job running now, or None."""
        return next(iter(self._jobs), None)

    @property
    def running_ids(self) -> list[str]:
        """The ids of every job running now (several on a cluster)."""
        return list(self._jobs)

    @property
    def connection(self) -> remote.Connection | None:
        """The cluster the queue is connected to (kept between runs), or None."""
        return self._connection

    def set_target(self, target: QueueTarget) -> None:
        """Run the next jobs on ``target``; running jobs finish where they are."""
        self.target = target
        wanted, connection = self._wanted(target), self._connection
        if connection is not None and wanted != self._connected_to:
            same_address = wanted is not None and self._connected_to is not None and wanted[0] == self._connected_to[0]
            if wanted is not None and wanted[1] > 0 and same_address:
                # Only the number of jobs at once changed: the connection stays (a local Ray
                # instance is not restarted); running jobs go on, the next ones follow the new count.
                self._connection = dataclasses.replace(connection, concurrency=wanted[1])
                self._connected_to = wanted
                self.connected.emit(connection.info, wanted[1])
            elif not self._remote_jobs():
                self._disconnect()
        if self._active:
            self._pump()

    def run_all(self) -> None:
        """Run every queued job in order; jobs added or retried meanwhile are run too."""
        if self._active:
            return
        self._active = True
        if not self._open:
            self._open = True
            self.running_changed.emit(True)
        self._pump()

    def stop(self) -> None:
        """Cancel every running job (each stops at its next cancel check) and run no more."""
        self._active = False
        for job in self._jobs.values():
            job.worker.cancel()

    def retry(self, ids: Iterable[str]) -> list[str]:
        """Put failed or cancelled jobs back as queued; returns the ids reset."""
        return self.model.reset(ids)

    def shutdown(self, timeout_ms: int = 10_000) -> bool:
        """Stop the threads (the application is closing); running jobs are saved as queued."""
        self._active = False
        jobs, self._jobs = self._jobs, {}
        for entry_id, job in jobs.items():
            job.worker.cancel()
            output_claims.release(job.output)
            self.model.set_status(entry_id, QUEUED, CLOSED, progress=0)
            self.model.set_host(entry_id, "")
        stopped = True
        for worker in [self._worker, *self._slots]:
            stopped &= worker.shutdown(timeout_ms)
        if self._control is not None:
            # A connection attempt ends within its own timeout: wait that long, not less (a QThread
            # destroyed while it runs would end the application with a crash instead of closing it).
            connecting = self._connecting is not None
            wait_ms = max(timeout_ms, int((remote.CONNECT_TIMEOUT_S + 5) * 1000)) if connecting else timeout_ms
            stopped &= self._control.shutdown(wait_ms)
        connection, self._connection, self._connecting = self._connection, None, None
        if connection is not None:
            try:
                connection.cluster.close()
            except Exception as exc:  # closing must not stop the application from closing
                log.warning("queue: closing the Ray connection failed: %s", exc)
        return stopped

    # -- choosing what runs next --------------------------------------------------------------
    def _pump(self) -> None:
        """Start what may start now; end the run when nothing is left to do."""
        if self._active:
            wanted = self._wanted(self.target)
            if wanted is None:
                self._pump_local()
            else:
                self._pump_remote(wanted)
        if not self._active and not self._jobs and self._connecting is None:
            self._end()

    def _pump_local(self) -> None:
        if self._jobs:
            return  # remote jobs of the previous setting finish first
        if self._connection is not None:
            self._disconnect()  # switched back to this computer: the cluster is not needed now
        for entry in self._startable():
            if self._claim(entry):
                self._start(entry, self._worker, None)
                return
        self._active = False

    def _pump_remote(self, wanted: tuple[str, int]) -> None:
        if any(not job.remote for job in self._jobs.values()) or self._connecting is not None:
            return  # a local job finishes first / the connection is being made
        if self._connection is None or self._connected_to != wanted:
            if self._jobs:
                return  # jobs on the previous cluster finish first
            if self._connection is not None:
                self._disconnect()
            self._connect(wanted)
            return
        connection = self._connection
        for entry in self._startable():
            if len(self._jobs) >= connection.concurrency:
                return
            if self._claim(entry):
                self._start(entry, self._free_slot(), connection)
        if not self._jobs:
            self._active = False

    def _startable(self) -> Iterable[QueueEntry]:
        """Queued jobs in order, except one whose output a running job writes (it waits for that one)."""
        for entry in self.model.entries():
            if entry.status != QUEUED:
                continue
            if any(_same_file(entry.job.output, job.output) for job in self._jobs.values()):
                continue
            yield entry

    def _claim(self, entry: QueueEntry) -> bool:
        try:
            output_claims.claim(entry.job.output, f'the queue job "{entry.name}"')
        except output_claims.OutputBusy as exc:
            log.error("queue job %s: %s", entry.name, exc)
            self.model.set_status(entry.id, FAILED, str(exc))
            self.errored.emit(entry.id, str(exc), "")
            return False
        return True

    def _start(self, entry: QueueEntry, worker: Runner, connection: remote.Connection | None) -> None:
        self._jobs[entry.id] = _Running(worker, entry.job.output, connection is not None)
        where = remote.THIS_COMPUTER if connection is None else "the cluster"
        self.model.set_status(
            entry.id, RUNNING, "starting…" if connection is None else "sending to the cluster…", progress=0
        )
        self.model.set_host(entry.id, remote.THIS_COMPUTER if connection is None else "")
        log.info("queue: running %s on %s", entry.name, where)
        self.started.emit(entry.id)
        if connection is None:
            fn = partial(run_job_task, job=entry.job)
        else:
            fn = partial(
                remote.remote_job_task,
                cluster=connection.cluster,
                job=entry.job,
                on_event=partial(self._events.happened.emit, entry.id),
            )
        worker.submit(
            Task(
                TASK_KIND,
                f'Queue job "{entry.name}"',
                fn,
                on_done=partial(self._on_finished, entry.id),
                on_error=partial(self._on_errored, entry.id),
                on_cancel=partial(self._on_cancelled, entry.id),
            )
        )

    def _end(self) -> None:
        self._active = False
        if not self._open:
            return
        self._open = False
        counts = self.model.counts()
        log.info("queue: run ended (%s)", ", ".join(f"{n} {s}" for s, n in counts.items()) or "empty")
        self.running_changed.emit(False)

    # -- workers ----------------------------------------------------------------------------------
    def _new_worker(self) -> Runner:
        worker = Runner(self)
        worker.progress.connect(partial(self._on_progress, worker))
        return worker

    def _free_slot(self) -> Runner:
        busy = {id(job.worker) for job in self._jobs.values()}
        for slot in self._slots:
            if id(slot) not in busy:
                return slot
        slot = self._new_worker()
        self._slots.append(slot)
        return slot

    def _control_worker(self) -> Runner:
        if self._control is None:
            self._control = Runner(self)
        return self._control

    def _remote_jobs(self) -> bool:
        return any(job.remote for job in self._jobs.values())

    # -- the cluster ------------------------------------------------------------------------------
    @staticmethod
    def _wanted(target: QueueTarget) -> tuple[str, int] | None:
        address = target.cluster_address
        return None if address is None else (address, max(0, min(target.concurrency, MAX_CONCURRENCY)))

    def _connect(self, wanted: tuple[str, int]) -> None:
        address, concurrency = wanted
        self._connecting = wanted
        log.info("queue: connecting to the Ray cluster at %s", address)
        self._control_worker().submit(
            Task(
                "queue-connect",
                f"Connecting to the Ray cluster at {address}",
                partial(
                    remote.connect_task,
                    factory=self.cluster_factory,
                    address=address,
                    concurrency=concurrency,
                    limit=MAX_CONCURRENCY,
                ),
                on_done=partial(self._on_connected, wanted),
                on_error=partial(self._on_connect_failed, address),
                on_cancel=partial(self._on_connect_failed, address, "cancelled", ""),
            )
        )

    def _on_connected(self, wanted: tuple[str, int], connection: remote.Connection) -> None:
        if self._connecting != wanted:  # shut down meanwhile: let it go off the GUI thread
            self._control_worker().submit(
                Task(
                    "queue-disconnect",
                    "Disconnecting from the Ray cluster",
                    partial(remote.close_task, cluster=connection.cluster),
                )
            )
            return
        self._connecting = None
        self._connection, self._connected_to = connection, wanted
        if self._wanted(self.target) != wanted:  # the setting changed meanwhile (no remote job ran)
            self._disconnect()
            self._pump()
            return
        log.info(
            "queue: connected to the Ray cluster at %s: %s; %d job(s) at once",
            wanted[0],
            remote.describe_info(connection.info),
            connection.concurrency,
        )
        self.connected.emit(connection.info, connection.concurrency)
        self._pump()

    def _on_connect_failed(self, address: str, message: str, details: str) -> None:
        if self._connecting is None:
            return
        attempt, self._connecting = self._connecting, None
        if self._wanted(self.target) != attempt:  # the user chose another target meanwhile: its run goes on
            log.info("queue: the connection to %s failed after the setting changed: %s", address, message)
            self._pump()
            return
        self._active = False
        # The engine's ClusterError starts with the address; a bug's message names the task, and the address.
        where = "" if message.startswith(address) else f" at {address}"
        text = f"Could not connect to the Ray cluster{where}: {message}; the jobs stay queued"
        log.error("queue: %s", text)
        self.connect_failed.emit(text, details)
        self._pump()

    def _disconnect(self) -> None:
        connection, self._connection, self._connected_to = self._connection, None, None
        if connection is None:
            return
        log.info("queue: disconnecting from the Ray cluster")
        self._control_worker().submit(
            Task(
                "queue-disconnect",
                "Disconnecting from the Ray cluster",
                partial(remote.close_task, cluster=connection.cluster),
            )
        )
        self.disconnected.emit()

    # -- what the workers report ------------------------------------------------------------------
    def _done(self, entry_id: str) -> bool:
        """Forget the job that just ended and release its output; False after shutdown (nothing to do)."""
        job = self._jobs.pop(entry_id, None)
        if job is None:
            return False
        output_claims.release(job.output)
        return True

    def _continue(self) -> None:
        self._pump()

    def _on_progress(self, worker: Runner, done: int, total: int, message: str) -> None:
        entry_id = next((i for i, job in self._jobs.items() if job.worker is worker), None)
        if entry_id is None:
            return
        entry = self.model.find(entry_id)
        percent = 100 * done // total if total > 0 else (entry.progress if entry else 0)
        self.model.set_progress(entry_id, percent, message)
        self.progress.emit(entry_id, done, total, message)

    @Slot(str, str, str)
    def _on_event(self, entry_id: str, kind: str, text: str) -> None:
        if entry_id not in self._jobs:
            return
        entry = self.model.find(entry_id)
        name = entry.name if entry else entry_id
        if kind == "host":
            self.model.set_host(entry_id, text)
            self.host_changed.emit(entry_id, text)
            log.info("queue job %s: runs on %s", name, text)
        elif kind == "retry":
            log.warning("queue job %s: %s", name, text)
            self.model.set_progress(entry_id, 0, text)
        else:
            log.info("queue job %s: %s", name, text)

    def _on_finished(self, entry_id: str, outcome: Any) -> None:
        if not self._done(entry_id):
            return
        self.model.set_status(entry_id, DONE, outcome_summary(outcome), progress=100)
        log.info("queue: wrote %s", outcome.output)
        self.finished.emit(entry_id, outcome)
        self._continue()

    def _on_errored(self, entry_id: str, message: str, details: str) -> None:
        if not self._done(entry_id):
            return
        entry = self.model.find(entry_id)
        self.model.set_status(entry_id, FAILED, message, details, progress=entry.progress if entry else 0)
        self.errored.emit(entry_id, message, details)
        self._continue()

    def _on_cancelled(self, entry_id: str) -> None:
        if not self._done(entry_id):
            return
        entry = self.model.find(entry_id)
        self.model.set_status(entry_id, CANCELLED, "cancelled", progress=entry.progress if entry else 0)
        self.cancelled.emit(entry_id)
        self._continue()


def _same_file(a: str, b: str) -> bool:
    return os.path.realpath(a) == os.path.realpath(b)
