"""``Analyzing``, the controller of Analyze Sensitivity: runs the analysis on the runner and shows it
(the Sensitivity pane and the tree's column); clears it when what it measured changes."""

from __future__ import annotations

import logging
from functools import partial
from typing import TYPE_CHECKING, Any

from mono_quant_core.errors import ConfigError
from mono_quant_gui.run import tasks
from mono_quant_gui.run.worker import Task
from mono_quant_gui.window import dialogs

if TYPE_CHECKING:
    from mono_quant_gui.window.main_window import MainWindow

log = logging.getLogger("mono_quant_gui")

#: The settings that change how a layer is quantized: an analysis made with others is stale.
_AFFECTING = (
    "dtype", "mode", "scheme", "granularity", "group_size", "observer", "percentile",
    "moving_average_constant", "histogram_bins", "histogram_method", "layer_overrides",
)  # fmt: skip


class Analyzing:
    """Analyze Sensitivity; ``session.sensitivity`` holds the report on screen."""

    def __init__(self, window: MainWindow) -> None:
        self.w = window
        self._shown_key: Any = None

    def connect(self) -> None:
        self.w.commands.analyze_sensitivity.triggered.connect(self.start)
        self.w.sensitivity_view.layer_clicked.connect(self.w.reveal_layer)
        self.w.settings_panel.changed.connect(self.check_valid)

    def problem(self) -> str | None:
        """Why Analyze Sensitivity is unavailable (None: it is available)."""
        problem = self.w.running.quantize_problem()
        if problem is None and not self.w.session.calibration:
            return "Choose a calibration folder (Ctrl+L): the analysis runs the model on its samples"
        return problem

    def update_action(self) -> None:
        problem = self.problem()
        action = self.w.commands.analyze_sensitivity
        action.setEnabled(problem is None)
        action.setToolTip(problem or "Quantize each ticked layer alone and measure its cost (Ctrl+Shift+A)")

    def key(self) -> Any:
        """What the analysis depends on besides the model and the folder (None: the settings are invalid)."""
        s = self.w.session
        try:
            config = self.w.settings_panel.config(s.config.layers).to_dict()
        except ConfigError:
            return None
        return repr(([config.get(k) for k in _AFFECTING], self.w.running.current_samples(), s.seed, s.metric))

    def start(self) -> None:
        if not self.w.commands.analyze_sensitivity.isEnabled():
            return
        try:
            config = self.w.running.current_config()
        except ConfigError as exc:
            dialogs.show_error(self.w, "Settings", str(exc))
            return
        s = self.w.session
        log.info("analyzing the sensitivity of %d layers: %s %s", len(config.layers or []), config.dtype, config.mode)
        self.w.runner.submit(
            Task(
                "sensitivity",
                "Analyzing sensitivity",
                partial(
                    tasks.sensitivity_task,
                    model=s.model,
                    config=config,
                    folder=s.calibration,
                    samples=self.w.running.current_samples(),
                    seed=s.seed,
                    skip_unusable=self.w.calibration_panel.skip_unusable(),
                    script=s.loaded.source.get("script_path") or s.script,
                    metric=s.metric,
                ),
                on_done=partial(self._analyzed, self.key(), s.loaded),
                on_error=self._failed,
                on_cancel=self._stopped,
            )
        )
        self.w.update_actions()

    def _analyzed(self, key: Any, loaded: Any, report: Any) -> None:
        if loaded is not self.w.session.loaded or key != self.key():
            self.w.statusBar().showMessage("Sensitivity analysis discarded: the model or settings changed meanwhile")
            return
        self.w.session.sensitivity = report
        self._shown_key = key
        self.w.sensitivity_view.set_report(report)
        self.w.modules.set_sensitivity(report.layers)
        self.w.sensitivity_dock.show()
        self.w.sensitivity_dock.raise_()
        best = report.layers[0].name if report.layers else "none"
        self.w.statusBar().showMessage(
            f"Sensitivity of {len(report.layers)} layers in {report.elapsed_s:.1f} s: most sensitive {best}"
        )
        log.info("sensitivity: %d layers, most sensitive %s", len(report.layers), best)
        self.w.update_actions()

    def _failed(self, message: str, details: str) -> None:
        self.w.statusBar().showMessage(f"Sensitivity analysis failed: {message.splitlines()[0]}")
        self.w.last_error = dialogs.show_error(self.w, "Sensitivity analysis failed", message, details)
        self.w.update_actions()

    def _stopped(self) -> None:
        self.w.statusBar().showMessage("Stopped: cancelled")
        self.w.update_actions()

    def clear(self) -> None:
        """No analysis on screen (another model or folder, or settings that make it stale)."""
        self.w.session.sensitivity = None
        self._shown_key = None
        self.w.sensitivity_view.clear()
        self.w.modules.set_sensitivity([])

    def check_valid(self) -> None:
        if self.w.session.sensitivity is not None and self.key() != self._shown_key:
            self.clear()
