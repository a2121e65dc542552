"""The settings panel's automatic fallback: Auto, the target (output SQNR or metric drop) and Fallback.

They edit ``target_output_sqnr_db``, ``target_metric_drop`` and ``fallback`` of the whole
QuantConfig (Auto off: no target).  A metric drop needs the script's task metric: without
one that choice is off with the reason, and a drop asked for (saved settings, a job) comes
back once a script with a metric is open.
"""

from __future__ import annotations

from typing import Any

from PySide6.QtCore import QObject, Signal
from PySide6.QtGui import QStandardItemModel
from PySide6.QtWidgets import QCheckBox, QComboBox, QDoubleSpinBox, QLabel, QWidget

from mono_quant_core.config import FALLBACKS
from mono_quant_gui.settings import settings_rules as rules

SQNR, DROP = "sqnr", "drop"
KINDS = ((SQNR, "Output SQNR"), (DROP, "Metric drop"))
#: The value box for each kind: output SQNR in dB, a drop in the metric's own units.
_SPIN: dict[str, dict[str, Any]] = {
    SQNR: {"minimum": 0.0, "maximum": 300.0, "decimals": 1, "singleStep": 1.0, "suffix": " dB"},
    DROP: {"minimum": 0.0, "maximum": 1e6, "decimals": 4, "singleStep": 0.005, "suffix": ""},
}
DEFAULT_VALUES = {SQNR: 30.0, DROP: 0.01}
_VALUE_LABELS = {SQNR: "At least", DROP: "At most"}
HELP = {
    "auto": "keep the fewest layers float (or wider, see Fallback) that reach the target",
    "target": "output SQNR: the whole model's, at least this; metric drop: the task metric "
    "(the script's evaluate(model)) may fall by at most this",
    "fallback": "the first rung a layer climbs when the target needs it: float, or a wider dtype first",
}


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


class TargetFields(QObject):
    """The widgets of the target rows; ``edited`` after each change the user makes."""

    edited = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.auto = QCheckBox("reach a target", objectName="auto_target")
        self.kind = QComboBox(objectName="target_kind")
        for key, text in KINDS:
            self.kind.addItem(text, key)
        self.value = QDoubleSpinBox(objectName="target_value")
        self.value_label = QLabel(objectName="target_value_label")  # "At least" (SQNR) or "At most" (drop)
        self.fallback = QComboBox(objectName="fallback")
        self.fallback.addItems(list(FALLBACKS))
        self.fallback.setCurrentText(rules.DEFAULTS["fallback"])
        self.auto.setToolTip(HELP["auto"])
        self.kind.setToolTip(HELP["target"])
        self.value.setToolTip(HELP["target"])
        self.value_label.setToolTip(HELP["target"])
        self.fallback.setToolTip(HELP["fallback"])
        self._values = dict(DEFAULT_VALUES)
        self._no_metric: str | None = None  # why a metric drop is off (None: it is offered)
        self._wanted_drop = False  # a drop asked for while no metric was there
        self._updating = False
        self._show_kind(SQNR)
        self.auto.toggled.connect(self._edited)
        self.kind.currentIndexChanged.connect(self._kind_chosen)
        self.value.valueChanged.connect(self._value_edited)
        self.fallback.currentTextChanged.connect(self._edited)

    # -- values ---------------------------------------------------------------------------
    def current_kind(self) -> str:
        return str(self.kind.currentData())

    def values(self) -> dict[str, Any]:
        """``target_output_sqnr_db``, ``target_metric_drop`` (both None with Auto off) and ``fallback``."""
        on, kind = self.auto.isChecked(), self.current_kind()
        return {
            "target_output_sqnr_db": self.value.value() if on and kind == SQNR else None,
            "target_metric_drop": self.value.value() if on and kind == DROP else None,
            "fallback": self.fallback.currentText(),
        }

    def persistent_values(self) -> dict[str, Any]:
        """:meth:`values`, with a drop still waiting for a script with a metric."""
        values = self.values()
        if self._wanted_drop and self.auto.isChecked():
            values.update(target_output_sqnr_db=None, target_metric_drop=self._values[DROP])
        return values

    def set_values(self, values: dict[str, Any]) -> None:
        """Show saved or a config's values (without emitting ``edited``)."""
        sqnr, drop = _number(values.get("target_output_sqnr_db")), _number(values.get("target_metric_drop"))
        kind = DROP if drop is not None else SQNR
        if drop is not None:
            self._values[DROP] = drop
        if sqnr is not None:
            self._values[SQNR] = sqnr
        self._wanted_drop = drop is not None and self._no_metric is not None
        self._updating = True
        try:
            self.auto.setChecked(sqnr is not None or drop is not None)
            self._show_kind(SQNR if self._wanted_drop else kind)
            fallback = values.get("fallback")
            if isinstance(fallback, str) and self.fallback.findText(fallback.strip().lower()) >= 0:
                self.fallback.setCurrentText(fallback.strip().lower())
        finally:
            self._updating = False

    def set_metric(self, reason: str | None) -> bool:
        """``reason``: why no metric drop can be asked for (the open script has no metric); None:
        it can.  A drop waiting for a metric comes back.  Returns whether anything changed."""
        if reason == self._no_metric:
            return False
        self._no_metric = reason
        self._updating = True
        try:
            if reason is None and self._wanted_drop:
                self._wanted_drop = False
                self._show_kind(DROP)
            elif reason is not None and self.current_kind() == DROP:
                self._wanted_drop = True
                self._show_kind(SQNR)
        finally:
            self._updating = False
        return True

    def refresh(self, dtype: str) -> str | None:
        """Offer what the engine allows with ``dtype``; returns a note to show (or None)."""
        self._updating = True
        try:
            model = self.kind.model()
            assert isinstance(model, QStandardItemModel)
            drop = model.item(self.kind.findData(DROP))
            drop.setEnabled(self._no_metric is None)
            drop.setToolTip(self._no_metric or "")
            problems = rules.fallback_problems(dtype)
            if self.fallback.currentText() in problems:
                self.fallback.setCurrentText(rules.DEFAULTS["fallback"])
            fallbacks = self.fallback.model()
            assert isinstance(fallbacks, QStandardItemModel)
            for row in range(self.fallback.count()):
                item = fallbacks.item(row)
                item.setEnabled(item.text() not in problems)
                item.setToolTip(problems.get(item.text(), ""))
            on = self.auto.isChecked()
            for widget in (self.kind, self.value, self.value_label, self.fallback):
                widget.setEnabled(on)
        finally:
            self._updating = False
        if self._wanted_drop and self.auto.isChecked():
            return f"{self._no_metric}: the target is output SQNR meanwhile"
        return None

    # -- internals ------------------------------------------------------------------------
    def _show_kind(self, kind: str) -> None:
        was = self._updating
        self._updating = True
        try:
            self.kind.setCurrentIndex(self.kind.findData(kind))
            spin = _SPIN[kind]
            self.value.setDecimals(spin["decimals"])
            self.value.setRange(spin["minimum"], spin["maximum"])
            self.value.setSingleStep(spin["singleStep"])
            self.value.setSuffix(spin["suffix"])
            self.value.setValue(self._values[kind])
            self.value_label.setText(_VALUE_LABELS[kind])
        finally:
            self._updating = was

    def _kind_chosen(self, _index: int) -> None:
        if self._updating:
            return
        self._wanted_drop = False  # the user chose a kind
        self._show_kind(self.current_kind())
        self.edited.emit()

    def _value_edited(self, value: float) -> None:
        if self._updating:
            return
        self._values[self.current_kind()] = value
        self.edited.emit()

    def _edited(self, *_: Any) -> None:
        if not self._updating:
            self.edited.emit()
