"""The settings panel's Algorithm section: how weights are rounded (round to nearest, GPTQ, HQQ),
GPTQ's and HQQ's options, SmoothQuant with its alpha, and bias correction.

They edit the QuantConfig fields of the same names.  An option that does not apply to the
current dtype, mode and granularity is off with the engine's reason
(:func:`mono_quant_core.config.algorithm_problem`); one chosen before falls back (to round to
nearest, or off) and the panel's note says so.  GPTQ, SmoothQuant and bias correction run on
calibration samples: without a calibration folder they are off, and one asked for (saved
settings, a job) comes back once a folder is chosen.
"""

from __future__ import annotations

from typing import Any

from PySide6.QtCore import QObject, Signal
from PySide6.QtGui import QStandardItemModel
from PySide6.QtWidgets import QCheckBox, QComboBox, QDoubleSpinBox, QLabel, QSpinBox, QWidget

from mono_quant_core.config import ALGORITHM_DEFAULTS, ALGORITHMS, algorithm_problem

#: Each algorithm's name in the panel and its one-line explanation: what it does, what it costs.
NAMES = {"rtn": "Round to nearest", "gptq": "GPTQ", "hqq": "HQQ"}
EXPLAIN = {
    "rtn": "rounds each weight to its nearest grid value: instant, no data needed",
    "gptq": "rounds column by column, correcting the error on calibration samples: better int4, "
    "needs a calibration folder and takes longer",
    "hqq": "fits scales and zero points to the weights (data-free): better int4 than round to nearest, a few seconds",
}
HELP = {
    "algorithm": "how weights are rounded onto their grid",
    "gptq_damp": "GPTQ damping: a fraction of the mean Hessian diagonal added for stability",
    "gptq_act_order": "GPTQ: round the columns with the largest activations first (often better int4)",
    "gptq_block_size": "GPTQ: columns per lazy block update (speed only; the result is nearly the same)",
    "hqq_iterations": "HQQ: iterations of its half-quadratic solver",
    "smoothquant": "SmoothQuant: move activation outliers into the weights of Linear layers "
    "(int8 static/dynamic; needs calibration samples); alpha: how much is moved",
    "bias_correction": "subtract each layer's mean output shift, measured on calibration samples",
}
#: Why an option that runs on samples is off without a calibration folder.
NEEDS_SAMPLES = "needs calibration samples: choose a calibration folder (Ctrl+L)"
#: The options that run on calibration samples (option name of algorithm_problem -> its label).
_SAMPLED = {"gptq": "GPTQ", "smoothquant": "SmoothQuant", "bias_correction": "Bias correction"}
DEFAULT_ALPHA = 0.5


def why_off(name: str, reason: str) -> str:
    """``SmoothQuant needs calibration samples…``: the option's name before its reason, once (the
    engine's reasons mostly name the option already: "GPTQ needs mode weight-only")."""
    return reason if reason.lower().startswith(name.lower()) else f"{name} {reason}"


class AlgorithmFields(QObject):
    """The widgets of the Algorithm rows; ``edited`` after each change the user makes."""

    edited = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.algorithm = QComboBox(objectName="algorithm")
        for key in ALGORITHMS:
            self.algorithm.addItem(NAMES[key], key)
        self.explain = QLabel(objectName="algorithm_explain", wordWrap=True)
        self.explain.setStyleSheet("color: palette(placeholder-text);")
        self.gptq_damp = QDoubleSpinBox(
            objectName="gptq_damp", minimum=0.0001, maximum=1.0, decimals=4, singleStep=0.005
        )
        self.gptq_act_order = QCheckBox("activation order", objectName="gptq_act_order")
        self.gptq_block_size = QSpinBox(objectName="gptq_block_size", minimum=1, maximum=65536, singleStep=32)
        self.hqq_iterations = QSpinBox(objectName="hqq_iterations", minimum=1, maximum=1000)
        self.smoothquant = QCheckBox("SmoothQuant", objectName="smoothquant")
        self.smoothquant_alpha = QDoubleSpinBox(
            objectName="smoothquant_alpha", minimum=0.05, maximum=1.0, decimals=2, singleStep=0.05, prefix="alpha "
        )
        self.bias_correction = QCheckBox("bias correction", objectName="bias_correction")
        self.algorithm.setToolTip(HELP["algorithm"])
        for name in ("gptq_damp", "gptq_act_order", "gptq_block_size", "hqq_iterations", "bias_correction"):
            getattr(self, name).setToolTip(HELP[name])
        self.smoothquant.setToolTip(HELP["smoothquant"])
        self.smoothquant_alpha.setToolTip(HELP["smoothquant"])
        self._updating = False
        #: Options asked for (saved settings, a job) that wait for a calibration folder.
        self._wanted: dict[str, Any] = {}
        self._show(ALGORITHM_DEFAULTS)
        self.algorithm.currentIndexChanged.connect(self._chosen)
        for box in (self.gptq_act_order, self.smoothquant, self.bias_correction):
            box.toggled.connect(self._chosen)
        for spin in (self.gptq_damp, self.gptq_block_size, self.hqq_iterations, self.smoothquant_alpha):
            spin.valueChanged.connect(self._edited)

    def rows(self) -> list[tuple[str, str, QWidget]]:
        """``(key, label, widget)`` of each form row, in order."""
        return [
            ("algorithm", "Algorithm", self.algorithm),
            ("algorithm_explain", "", self.explain),
            ("gptq_damp", "GPTQ damping", self.gptq_damp),
            ("gptq_act_order", "GPTQ order", self.gptq_act_order),
            ("gptq_block_size", "GPTQ block", self.gptq_block_size),
            ("hqq_iterations", "HQQ iterations", self.hqq_iterations),
            ("smoothquant", "Smoothing", self.smoothquant),
            ("smoothquant_alpha", "Alpha", self.smoothquant_alpha),
            ("bias_correction", "Bias", self.bias_correction),
        ]

    def widget(self, key: str) -> QWidget:
        return next(w for k, _, w in self.rows() if k == key)

    # -- values ---------------------------------------------------------------------------
    def current(self) -> str:
        return str(self.algorithm.currentData())

    def values(self) -> dict[str, Any]:
        """The QuantConfig fields of ALGORITHM_DEFAULTS, as shown."""
        return {
            "algorithm": self.current(),
            "gptq_damp": self.gptq_damp.value(),
            "gptq_act_order": self.gptq_act_order.isChecked(),
            "gptq_block_size": self.gptq_block_size.value(),
            "hqq_iterations": self.hqq_iterations.value(),
            "smoothquant_alpha": self.smoothquant_alpha.value() if self.smoothquant.isChecked() else None,
            "bias_correction": self.bias_correction.isChecked(),
        }

    def persistent_values(self) -> dict[str, Any]:
        """:meth:`values`, with the options still waiting for a calibration folder."""
        return {**self.values(), **self._wanted}

    def set_values(self, values: dict[str, Any]) -> None:
        """Show saved or a config's values (without emitting ``edited``); bad values are ignored."""
        self._wanted = {}
        self._show({**ALGORITHM_DEFAULTS, **values})

    def refresh(self, dtype: str, mode: str, granularity: str, has_calibration: bool) -> list[str]:
        """Offer what applies to these settings; a chosen option that does not falls back.
        Returns notes to show (what fell back and why)."""
        notes: list[str] = []
        problems = {
            option: algorithm_problem(option, dtype, mode, granularity)
            for option in ("gptq", "hqq", "smoothquant", "bias_correction")
        }
        waiting = {o: problems[o] is None and not has_calibration for o in _SAMPLED}
        for option in _SAMPLED:
            if waiting[option]:
                problems[option] = NEEDS_SAMPLES
        self._updating = True
        try:
            if has_calibration and self._wanted:
                wanted, self._wanted = self._wanted, {}
                self._show({**self.values(), **wanted})
            model = self.algorithm.model()
            assert isinstance(model, QStandardItemModel)
            for row, key in enumerate(ALGORITHMS):
                reason = problems.get(key)
                model.item(row).setEnabled(reason is None)
                model.item(row).setToolTip(why_off(NAMES[key], reason) if reason else EXPLAIN[key])
            chosen = self.current()
            if problems.get(chosen):
                if waiting.get(chosen):
                    self._wanted["algorithm"] = chosen
                notes.append(f"{NAMES[chosen]}: {problems[chosen]}; round to nearest meanwhile")
                self.algorithm.setCurrentIndex(self.algorithm.findData("rtn"))
            for option, box in (("smoothquant", self.smoothquant), ("bias_correction", self.bias_correction)):
                reason = problems[option]
                if reason and box.isChecked():
                    if waiting[option] and option == "smoothquant":
                        self._wanted["smoothquant_alpha"] = self.smoothquant_alpha.value()
                    elif waiting[option]:
                        self._wanted["bias_correction"] = True
                    notes.append(f"{_SAMPLED[option]}: {reason}; off meanwhile")
                    box.setChecked(False)
                box.setEnabled(reason is None)
                box.setToolTip(why_off(_SAMPLED[option], reason) if reason else HELP[option])
            self._enable_options()
        finally:
            self._updating = False
        return notes

    def off_reasons(self) -> list[str]:
        """Why SmoothQuant and bias correction are off with these settings (their tooltips), for the
        panel to say where it can be read without hovering."""
        return [box.toolTip() for box in (self.smoothquant, self.bias_correction) if not box.isEnabled()]

    # -- internals ------------------------------------------------------------------------
    def _show(self, values: dict[str, Any]) -> None:
        was, self._updating = self._updating, True
        try:
            index = self.algorithm.findData(values.get("algorithm"))
            self.algorithm.setCurrentIndex(index if index >= 0 else self.algorithm.findData("rtn"))
            for name, spin in (("gptq_damp", self.gptq_damp), ("smoothquant_alpha", self.smoothquant_alpha)):
                value = values.get(name)
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    spin.setValue(float(value))
                elif name == "smoothquant_alpha":
                    spin.setValue(DEFAULT_ALPHA)
            for name, int_spin in (("gptq_block_size", self.gptq_block_size), ("hqq_iterations", self.hqq_iterations)):
                value = values.get(name)
                if isinstance(value, int) and not isinstance(value, bool):
                    int_spin.setValue(value)
            alpha = values.get("smoothquant_alpha")
            self.smoothquant.setChecked(isinstance(alpha, (int, float)) and not isinstance(alpha, bool))
            self.gptq_act_order.setChecked(values.get("gptq_act_order") is True)
            self.bias_correction.setChecked(values.get("bias_correction") is True)
            self._enable_options()
        finally:
            self._updating = was

    def _enable_options(self) -> None:
        """Each algorithm's own options only while it is chosen; the explanation of the choice."""
        chosen = self.current()
        for widget in (self.gptq_damp, self.gptq_act_order, self.gptq_block_size):
            widget.setEnabled(chosen == "gptq")
        self.hqq_iterations.setEnabled(chosen == "hqq")
        self.smoothquant_alpha.setEnabled(self.smoothquant.isChecked() and self.smoothquant.isEnabled())
        self.explain.setText(EXPLAIN[chosen])

    def _chosen(self, *_: Any) -> None:
        if self._updating:
            return
        self._wanted = {}  # the user chose
        self._enable_options()
        self.edited.emit()

    def _edited(self, *_: Any) -> None:
        if not self._updating:
            self.edited.emit()
