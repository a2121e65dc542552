"""One worker abstraction: plain task functions run on a QThread and report through fixed signals.

A task is a plain function ``fn(ctx) -> result`` that knows nothing of Qt; it
calls ``ctx.progress(done, total, message)``, ``ctx.on_layer(layer)`` and
checks ``ctx.cancel``.  Those calls run on the worker thread; the
:class:`Runner` re-emits them as signals that reach the GUI thread through
queued connections, so only the GUI thread touches widgets.

Signal vocabulary of :class:`Runner` (all delivered on the GUI thread):
``started(task)``, ``progress(done, total, message)``, ``layer_done(LayerReport)``,
``finished(result)``, ``errored(message, details)``, ``cancelled()``, and
``busy_changed(bool)``.  ``total == 0`` means "amount unknown".
"""

from __future__ import annotations

import collections
import gc
import logging
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from PySide6.QtCore import QObject, QThread, Signal, Slot

from mono_quant_core.errors import Cancelled, MonoQuantError
from mono_quant_core.progress import CancelToken

log = logging.getLogger("mono_quant_gui.run.worker")

#: Progress signals are coalesced to at most one per this many seconds (bursts of
#: per-sample callbacks would otherwise flood the GUI thread's event queue).
PROGRESS_INTERVAL_S = 0.03


@dataclass
class Task:
    """A unit of background work.  ``info`` may be filled by ``fn`` on the worker thread
    (e.g. the run plan); the GUI reads it only after a signal from the same task."""

    kind: str
    title: str
    fn: Callable[[TaskContext], Any]
    info: dict[str, Any] = field(default_factory=dict)
    #: What the submitter does with the outcome, called on the GUI thread right after the
    #: runner's own finished / errored / cancelled signal: the task carries its handlers, so no
    #: handler reads which task just ended or dispatches on ``kind``.
    on_done: Callable[[Any], None] | None = None
    on_error: Callable[[str, str], None] | None = None
    on_cancel: Callable[[], None] | None = None
    cancel: CancelToken = field(default_factory=CancelToken)
    started_at: float = 0.0


class TaskContext:
    """What a task function receives; every method is called on the worker thread."""

    def __init__(self, task: Task, executor: _Executor):
        self.task = task
        self.cancel = task.cancel
        self._executor = executor
        self._last_emit = 0.0
        self._last_phase: str | None = None
        self._last_phase_emit = 0.0
        self._last_run_phase: str | None = None

    def progress(self, done: int, total: int, message: str) -> None:
        """Report progress; throttled, but the first step, the final step and the first step
        of each phase (the message's first word changes) always go through."""
        now = time.perf_counter()
        final = total > 0 and done >= total
        phase = message.split(" ", 1)[0]
        if final or phase != self._last_phase or now - self._last_emit >= PROGRESS_INTERVAL_S:
            self._last_emit, self._last_phase = now, phase
            self._executor.progress.emit(int(done), int(total), str(message))

    def on_layer(self, layer: Any) -> None:
        """Report one finished layer (a LayerReport)."""
        self._executor.layer_done.emit(layer)

    def on_phase(self, item: Any) -> None:
        """Report the run's plan (a RunPlan) or a step of one phase (a PhaseEvent); throttled
        like ``progress``, but the plan, each phase's first and last step always go through."""
        now = time.perf_counter()
        phase = getattr(item, "phase", None)
        edge = phase is None or item.done == 0 or item.done >= item.total or phase != self._last_run_phase
        if edge or now - self._last_phase_emit >= PROGRESS_INTERVAL_S:
            self._last_phase_emit, self._last_run_phase = now, phase
            self._executor.phase.emit(self.task, item)


class _Executor(QObject):
    """Lives on the worker thread and runs one task per ``run`` call."""

    progress = Signal(int, int, str)
    layer_done = Signal(object)
    phase = Signal(object, object)  # task, RunPlan | PhaseEvent
    done = Signal(object, str, object)  # task, outcome ("finished" | "errored" | "cancelled"), payload

    @Slot(object)
    def run(self, task: Task) -> None:
        ctx = TaskContext(task, self)
        try:
            task.cancel.check()
            result = task.fn(ctx)
        except Cancelled:
            self.done.emit(task, "cancelled", None)
        except MonoQuantError as exc:
            self.done.emit(task, "errored", (str(exc), traceback.format_exc()))
        except (Exception, SystemExit) as exc:
            # The worker boundary: a bug or a user script's own exception (or its
            # sys.exit) becomes an error report, never a dead application.
            message = f"{task.title} failed: {type(exc).__name__}: {exc}"
            self.done.emit(task, "errored", (message, traceback.format_exc()))
        else:
            self.done.emit(task, "finished", result)


class Runner(QObject):
    """Runs tasks one at a time on its own QThread; later submissions wait in a queue."""

    started = Signal(object)
    progress = Signal(int, int, str)
    layer_done = Signal(object)
    #: ``(task, RunPlan | PhaseEvent)`` from the engine's ``on_phase``.
    phase = Signal(object, object)
    finished = Signal(object)
    errored = Signal(str, str)
    cancelled = Signal()
    busy_changed = Signal(bool)
    _run = Signal(object)

    def __init__(self, parent: QObject | None = None):
        super().__init__(parent)
        self._thread = QThread()
        self._thread.setObjectName("mono-quant worker")
        self._executor = _Executor()
        self._executor.moveToThread(self._thread)
        self._run.connect(self._executor.run)
        self._executor.progress.connect(self._on_progress)
        self._executor.layer_done.connect(self._on_layer)
        self._executor.phase.connect(self._on_phase)
        self._executor.done.connect(self._on_done)
        self._pending: collections.deque[Task] = collections.deque()
        self.current: Task | None = None
        self._thread.start()

    @property
    def busy(self) -> bool:
        return self.current is not None or bool(self._pending)

    def has(self, kind: str) -> bool:
        """Whether a task of ``kind`` is running or queued."""
        return any(t.kind == kind for t in ([self.current] if self.current else []) + list(self._pending))

    def submit(self, task: Task) -> Task:
        """Start ``task`` now, or after the tasks already queued."""
        was_busy = self.busy
        self._pending.append(task)
        if self.current is None:
            self._start_next()
        if not was_busy:
            self.busy_changed.emit(True)
        return task

    def cancel(self) -> None:
        """Ask the running task to stop (it stops at its next check) and drop queued tasks of its kind."""
        if self.current is not None:
            kind = self.current.kind
            self.current.cancel.cancel()
            self._pending = collections.deque(t for t in self._pending if t.kind != kind)

    def shutdown(self, timeout_ms: int = 10_000) -> bool:
        """Cancel everything and stop the thread; True when it stopped within ``timeout_ms``."""
        self._pending.clear()
        if self.current is not None:
            self.current.cancel.cancel()
        self._thread.quit()
        stopped = self._thread.wait(timeout_ms)
        if not stopped:
            log.error("the worker thread did not stop within %d ms", timeout_ms)
        return stopped

    def _start_next(self) -> None:
        if not self._pending or not self._thread.isRunning():
            return
        task = self._pending.popleft()
        task.started_at = time.perf_counter()
        self.current = task
        self.started.emit(task)
        self._run.emit(task)

    @Slot(int, int, str)
    def _on_progress(self, done: int, total: int, message: str) -> None:
        if self.current is not None:
            self.progress.emit(done, total, message)

    @Slot(object)
    def _on_layer(self, layer: Any) -> None:
        if self.current is not None:
            self.layer_done.emit(layer)

    @Slot(object, object)
    def _on_phase(self, task: Task, item: Any) -> None:
        if task is self.current:
            self.phase.emit(task, item)

    @Slot(object, str, object)
    def _on_done(self, task: Task, outcome: str, payload: Any) -> None:
        self.current = None
        if outcome == "finished":
            self.finished.emit(payload)
            if task.on_done is not None:
                task.on_done(payload)
        elif outcome == "cancelled":
            log.info("%s: cancelled", task.title)
            self.cancelled.emit()
            if task.on_cancel is not None:
                task.on_cancel()
        else:
            message, details = payload
            log.error("%s", message)
            self.errored.emit(message, details)
            if task.on_error is not None:
                task.on_error(message, details)
        # A slot above may already have started the next task through submit().
        if self.current is None and self._pending:
            self._start_next()
        elif not self.busy:
            # Idle now: free what the task left in reference cycles, here on the GUI
            # thread (automatic collection is off, see app.install_garbage_collector).
            gc.collect()
            self.busy_changed.emit(False)
