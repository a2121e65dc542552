"""The status bar's progress bar and ETA for the task in flight."""

from __future__ import annotations

import time

from PySide6.QtWidgets import QHBoxLayout, QLabel, QProgressBar, QWidget

from mono_quant_core.progress import PhaseEvent, RemainingTime, RunPlan
from mono_quant_gui.window.formatting import format_duration

#: No ETA before this much of the work is done (early rates are noise).
_MIN_FRACTION = 0.03


def estimate_eta(elapsed_s: float, done: int, total: int) -> float | None:
    """Seconds left at the average rate so far; None when it cannot be judged yet."""
    if total <= 0 or done <= 0 or done / total < _MIN_FRACTION or elapsed_s <= 0:
        return None
    return elapsed_s * (total - done) / done


class RunStatus(QWidget):
    """A progress bar with the step message and an ETA; hidden when idle."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.bar = QProgressBar()
        self.bar.setObjectName("run_progress")
        self.bar.setFixedWidth(220)
        self.bar.setMaximumHeight(16)
        self.eta = QLabel()
        self.eta.setObjectName("run_eta")
        self.eta.setMinimumWidth(120)
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 6, 0)
        layout.addWidget(self.eta)
        layout.addWidget(self.bar)
        self._started = 0.0
        self._remaining: RemainingTime | None = None
        self.hide()

    def begin(self) -> None:
        self._started = time.perf_counter()
        self._remaining = None
        self.bar.setRange(0, 0)
        self.eta.setText("")
        self.show()

    def set_plan(self, plan: RunPlan) -> None:
        """The task announced its phases: the estimate weighs them by their measured cost."""
        self._remaining = RemainingTime(plan)

    def update_phase(self, event: PhaseEvent) -> None:
        if self._remaining is not None:
            self._show_eta(self._remaining.update(event))

    def update_progress(self, done: int, total: int) -> None:
        """Determinate when ``total`` > 0, busy otherwise."""
        if total <= 0:
            self.bar.setRange(0, 0)
            self.eta.setText("")
            return
        self.bar.setRange(0, total)
        self.bar.setValue(min(done, total))
        if self._remaining is None:  # a task without phases: the average rate
            self._show_eta(estimate_eta(time.perf_counter() - self._started, done, total))

    def _show_eta(self, eta: float | None) -> None:
        if eta is None:
            self.eta.setText("")
        else:
            self.eta.setText("less than a second left" if eta < 1 else f"about {format_duration(eta)} left")

    def end(self) -> None:
        self.hide()
