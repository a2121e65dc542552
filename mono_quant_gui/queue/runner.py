"""Runs the queue: one job at a time on the queue's own worker thread, in the order shown.

Each job calls :func:`mono_quant_core.jobs.run_job`, the function behind
``mono-quant run``, so a queued job writes the same tensors as the command
line.  A failed job is marked and the run goes on; :meth:`QueueRunner.stop`
cancels the running job at its next cancel check (between calibration
samples) and ends the run.  Signals are delivered on the GUI thread.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from functools import partial
from typing import Any

from PySide6.QtCore import QObject, Signal, Slot

from mono_quant_core.report import format_db
from mono_quant_gui.queue import output_claims
from mono_quant_gui.queue.entry import CANCELLED, DONE, FAILED, QUEUED, RUNNING
from mono_quant_gui.queue.model import QueueModel
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


class QueueRunner(QObject):
    """Runs the model's queued jobs one after another.

    Signals (GUI thread): ``started(id)``, ``progress(id, done, total, message)``,
    ``finished(id, JobOutcome)``, ``errored(id, message, details)``,
    ``cancelled(id)``, ``running_changed(bool)`` (a run began or ended).
    """

    started = Signal(str)
    progress = Signal(str, int, int, str)
    finished = Signal(str, object)
    errored = Signal(str, str, str)
    cancelled = Signal(str)
    running_changed = Signal(bool)

    def __init__(self, model: QueueModel, parent: QObject | None = None):
        super().__init__(parent)
        self.model = model
        self._worker = Runner(self)  # its own QThread: independent of the main window's runner
        self._worker.progress.connect(self._on_progress)
        self._worker.finished.connect(self._on_finished)
        self._worker.errored.connect(self._on_errored)
        self._worker.cancelled.connect(self._on_cancelled)
        self._active = False
        self._current: str | None = None
        self._output: str | None = None

    @property
    def running(self) -> bool:
        """True from ``run_all`` until the run ends (nothing queued, or stopped)."""
        return self._active or self._current is not None

    @property
    def current_id(self) -> str | None:
        """The id of the job running now, or None."""
        return self._current

    def run_all(self) -> None:
        """Run every queued job in order; jobs added or retried meanwhile are run too."""
        if self._active:
            return
        was_running = self.running
        self._active = True
        if not was_running:
            self.running_changed.emit(True)
        if self._current is None:
            self._start_next()

    def stop(self) -> None:
        """Cancel the running job (it stops within one calibration sample) and run no more."""
        self._active = False
        if self._current is not None:
            self._worker.cancel()

    def retry(self, ids: Iterable[str]) -> list[str]:
        """Put failed or cancelled jobs back as queued; returns the ids reset."""
        return self.model.reset(ids)

    def shutdown(self, timeout_ms: int = 10_000) -> bool:
        """Stop the thread (the application is closing); a running job is saved as queued."""
        self._active = False
        current, self._current = self._current, None
        if current is not None:
            self.model.set_status(current, QUEUED, CLOSED, progress=0)
        stopped = self._worker.shutdown(timeout_ms)
        self._release()
        return stopped

    # -- one job after another --------------------------------------------------------------
    def _start_next(self) -> None:
        while self._active:
            entry = self.model.next_queued()
            if entry is None:
                break
            try:
                output_claims.claim(entry.job.output, f'the queue job "{entry.name}"')
            except output_claims.OutputBusy as exc:
                log.error("queue job %s: %s", entry.name, exc)
                self.model.set_status(entry.id, FAILED, str(exc))
                self.errored.emit(entry.id, str(exc), "")
                continue
            self._current, self._output = entry.id, entry.job.output
            self.model.set_status(entry.id, RUNNING, "starting…", progress=0)
            log.info("queue: running %s", entry.name)
            self.started.emit(entry.id)
            self._worker.submit(Task(TASK_KIND, f'Queue job "{entry.name}"', partial(run_job_task, job=entry.job)))
            return
        self._end()

    def _end(self) -> None:
        self._active = False
        counts = self.model.counts()
        log.info("queue: run ended (%s)", ", ".join(f"{n} {s}" for s, n in counts.items()) or "empty")
        self.running_changed.emit(False)

    def _release(self) -> None:
        if self._output is not None:
            output_claims.release(self._output)
            self._output = None

    def _done(self) -> str | None:
        """The id of the job that just ended (None after shutdown), with its output claim released."""
        current, self._current = self._current, None
        self._release()
        return current

    def _continue(self) -> None:
        if self._active:
            self._start_next()
        else:
            self._end()

    @Slot(int, int, str)
    def _on_progress(self, done: int, total: int, message: str) -> None:
        if self._current is None:
            return
        entry = self.model.find(self._current)
        percent = 100 * done // total if total > 0 else (entry.progress if entry else 0)
        self.model.set_progress(self._current, percent, message)
        self.progress.emit(self._current, done, total, message)

    @Slot(object)
    def _on_finished(self, outcome: Any) -> None:
        entry_id = self._done()
        if entry_id is None:
            return
        self.model.set_status(entry_id, DONE, outcome_summary(outcome), progress=100)
        log.info("queue: wrote %s", outcome.output)
        self.finished.emit(entry_id, outcome)
        self._continue()

    @Slot(str, str)
    def _on_errored(self, message: str, details: str) -> None:
        entry_id = self._done()
        if entry_id is None:
            return
        entry = self.model.find(entry_id)
        self.model.set_status(entry_id, FAILED, message, details, progress=entry.progress if entry else 0)
        self.errored.emit(entry_id, message, details)
        self._continue()

    @Slot()
    def _on_cancelled(self) -> None:
        entry_id = self._done()
        if entry_id is None:
            return
        entry = self.model.find(entry_id)
        self.model.set_status(entry_id, CANCELLED, "cancelled", progress=entry.progress if entry else 0)
        self.cancelled.emit(entry_id)
        self._continue()
