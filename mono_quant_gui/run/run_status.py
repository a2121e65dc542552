"""The status bar's progress bar, the phase under way and the ETA for the task in flight."""

from __future__ import annotations

import time

from PySide6.QtWidgets import QHBoxLayout, QLabel, QProgressBar, QWidget

from mono_quant_core.progress import PhaseEvent, RemainingTime, RunPlan
from mono_quant_gui.window.formatting import format_duration

#: No ETA before this much of the work is done (early rates are noise).
_MIN_FRACTION = 0.03
#: How each phase the engine announces (mono_quant_core.progress.PhaseEvent.phase) is named in the
#: status bar; a phase not listed shows its own name, capitalised.
PHASE_LABELS = {
    "smooth": "Smoothing",  # SmoothQuant measures activation ranges (before calibration)
    "calibrate": "Calibrating",
    "quantize": "Quantizing",
    "validate": "Validating",
    "metric": "Measuring the metric",
    "search": "Finding layers to keep",  # the accuracy target's search
    "sensitivity": "Measuring sensitivity",
}


def phase_label(phase: str) -> str:
    """``Smoothing`` for ``smooth``: what the status bar says the run is doing."""
    return PHASE_LABELS.get(phase, phase.replace("_", " ").capitalize())


def estimate_eta(elapsed_s: float, done: int, total: int) -> float | None:
    """Seconds left at the average rate so far; None when it cannot be judged yet."""
    if total <= 0 or done <= 0 or done / total < _MIN_FRACTION or elapsed_s <= 0:
        return None
    return elapsed_s * (total - done) / done


class RunStatus(QWidget):
    """The phase under way, an ETA and a progress bar; hidden when idle."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.bar = QProgressBar()
        self.bar.setObjectName("run_progress")
        self.bar.setFixedWidth(220)
        self.bar.setMaximumHeight(16)
        self.eta = QLabel()
        self.eta.setObjectName("run_eta")
        self.eta.setMinimumWidth(120)
        self.phase = QLabel()
        self.phase.setObjectName("run_phase")
        self.phase.setStyleSheet("font-weight: 600;")
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 6, 0)
        layout.setSpacing(8)
        layout.addStretch(1)  # the phase, the time left and the bar side by side, at the right
        layout.addWidget(self.phase)
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
        self.phase.setText("")
        self.show()

    def set_plan(self, plan: RunPlan) -> None:
        """The task announced its phases: the estimate weighs them by their measured cost."""
        self._remaining = RemainingTime(plan)

    def update_phase(self, event: PhaseEvent) -> None:
        self.phase.setText(phase_label(event.phase))
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
