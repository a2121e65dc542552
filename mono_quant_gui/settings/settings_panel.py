"""The settings panel: dtype, mode, scheme, granularity, group size, observer, samples, checks,
and the automatic fallback's target (:mod:`~mono_quant_gui.settings.target_fields`).

Options that cannot be combined with the current choice are disabled with the
engine's own reason as their tooltip, and the first such reason is shown
under the form.
"""

from __future__ import annotations

from typing import Any

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QStandardItemModel
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QLabel,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from mono_quant_core.config import QuantConfig, canonical_choice
from mono_quant_core.errors import ConfigError
from mono_quant_gui.settings import settings_rules as rules
from mono_quant_gui.settings.algorithm_fields import AlgorithmFields
from mono_quant_gui.settings.target_fields import HELP as TARGET_HELP
from mono_quant_gui.settings.target_fields import TargetFields

#: The labelled Algorithm rows: each label greys out with its field and carries its tooltip (the reason when off).
ALGORITHM_ROWS = (
    "gptq_damp",
    "gptq_act_order",
    "gptq_block_size",
    "hqq_iterations",
    "smoothquant",
    "smoothquant_alpha",
    "bias_correction",
)
_LABELS = {
    "dtype": "Data type",
    "mode": "Mode",
    "scheme": "Scheme",
    "granularity": "Granularity",
    "group_size": "Group size",
    "observer": "Observer",
    "samples": "Samples",
    "on_failure": "On failure",
    "min_output_sqnr_db": "Min. output SQNR",
}
_HELP = {
    "dtype": "int8/int4 store integer weights with scales; fp16/bf16 are plain casts",
    "mode": "weight-only: float activations; dynamic: activations quantized per batch; "
    "static: activation ranges fixed by calibration",
    "scheme": "symmetric: zero point 0; asymmetric: a zero point per scale",
    "granularity": "one scale per tensor, per output channel, or per group of input values",
    "group_size": "input values sharing one scale (per-group granularity)",
    "observer": "how calibration turns observed activations into a range",
    "samples": "calibration/validation files to use (all: every file in the folder)",
    "on_failure": "what a failed check does: stop with an error, warn, or ignore it",
    "min_output_sqnr_db": "fail the run when the model's output SQNR is below this (off: no minimum)",
}


DEVICE_HELP = (
    "Where calibration, the algorithms and quantization compute: auto is the first CUDA GPU; "
    "the saved file is the same whatever the device"
)

FOLD_BATCHNORM_HELP = (
    "Fold each BatchNorm that reads only a convolution's output into that convolution before "
    "quantizing: one rounding and no BatchNorm pass; your model is not changed and the file "
    "loads into it as before"
)


class SettingsPanel(QWidget):
    """Quantization settings bound to QuantConfig; emits ``changed`` after every edit."""

    changed = Signal()

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self._has_calibration = False
        self._updating = False
        #: The whole QuantConfig the widgets edit: fields without a widget (observer knobs,
        #: warning thresholds, layer rules) pass through unchanged.
        self._base = QuantConfig()
        #: A mode asked for (saved settings, a job) that needs a calibration folder not chosen
        #: yet: it comes back once one is, and it is what the settings remember meanwhile.
        self._wanted_mode: str | None = None
        self.combos: dict[str, QComboBox] = {}
        form = QFormLayout()
        form.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.AllNonFixedFieldsGrow)
        for name, options in rules.CHOICES.items():
            combo = QComboBox()
            combo.setObjectName(name)
            combo.addItems(list(options))
            combo.setCurrentText(rules.DEFAULTS[name])
            combo.currentTextChanged.connect(self._edited)
            self.combos[name] = combo
        self.group_size = QSpinBox(objectName="group_size", minimum=2, maximum=65536, singleStep=2)
        self.group_size.setValue(rules.DEFAULTS["group_size"])
        self.samples = QSpinBox(objectName="samples", minimum=0, maximum=1_000_000)
        self.samples.setSpecialValueText("all")
        self.min_sqnr = QDoubleSpinBox(
            objectName="min_output_sqnr_db", minimum=0.0, maximum=300.0, decimals=1, singleStep=1.0, suffix=" dB"
        )
        self.min_sqnr.setSpecialValueText("off")
        for spin in (self.group_size, self.samples, self.min_sqnr):
            spin.valueChanged.connect(self._edited)
        self.widgets: dict[str, QWidget] = {
            **self.combos,
            "group_size": self.group_size,
            "samples": self.samples,
            "min_output_sqnr_db": self.min_sqnr,
        }
        # Where the run computes: a row only when this machine has a CUDA GPU (set_devices).
        self.device = QComboBox(objectName="device")
        self.device.addItem("auto")
        self.device.setToolTip(DEVICE_HELP)
        self.device.currentTextChanged.connect(self._edited)
        self.device_label = QLabel("Device", objectName="device_label")
        self.device_label.setToolTip(DEVICE_HELP)
        self.fold_batchnorm = QCheckBox("fold into convolutions")
        self.fold_batchnorm.setObjectName("fold_batchnorm")
        self.fold_batchnorm.setToolTip(FOLD_BATCHNORM_HELP)
        self.fold_batchnorm.toggled.connect(self._edited)
        self.target = TargetFields(self)
        self.target.edited.connect(self._edited)
        self._labels: dict[str, QLabel] = {}
        for name in (
            "dtype",
            "mode",
            "scheme",
            "granularity",
            "group_size",
            "observer",
            "samples",
            "on_failure",
            "min_output_sqnr_db",
        ):
            label = QLabel(_LABELS[name])
            label.setToolTip(_HELP[name])
            self.widgets[name].setToolTip(_HELP[name])
            self._labels[name] = label
            form.addRow(label, self.widgets[name])
        form.addRow(self.device_label, self.device)
        self.device_label.hide()
        self.device.hide()
        fold_label = QLabel("BatchNorm")
        fold_label.setObjectName("fold_batchnorm_label")
        fold_label.setToolTip(FOLD_BATCHNORM_HELP)
        form.addRow(fold_label, self.fold_batchnorm)
        for key, text, widget in (
            ("auto", "Auto", self.target.auto),
            ("target", "Target", self.target.kind),
            ("fallback", "Fallback", self.target.fallback),
        ):
            label = QLabel(text, objectName=f"{key}_label")
            label.setToolTip(TARGET_HELP[key])
            self._labels[key] = label
            form.addRow(label, widget)
            if key == "target":
                form.addRow(self.target.value_label, self.target.value)
        self.algorithms = AlgorithmFields(self)
        self.algorithms.edited.connect(self._edited)
        heading = QLabel("Algorithm", objectName="algorithm_heading")
        heading.setStyleSheet("font-weight: 600; margin-top: 8px;")
        form.addRow(heading)
        for key, text, widget in self.algorithms.rows():
            if not text:
                form.addRow(widget)
                continue
            label = QLabel(text, objectName=f"{key}_label")
            label.setToolTip(widget.toolTip())
            self._labels[key] = label
            form.addRow(label, widget)
        # Why the options that are greyed out are off, readable without hovering over them.  Under the
        # form, not a row of it: a second wrapped row spanning the form gets its height cut.
        self.algorithm_off = QLabel()
        self.algorithm_off.setObjectName("algorithm_off")
        self.algorithm_off.setWordWrap(True)
        self.algorithm_off.setTextFormat(Qt.TextFormat.PlainText)
        self.algorithm_off.setStyleSheet("color: palette(placeholder-text);")
        self.note = QLabel(objectName="settings_note")
        self.note.setWordWrap(True)
        self.note.setTextFormat(Qt.TextFormat.PlainText)
        self.note.setStyleSheet("color: palette(placeholder-text);")
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(self.algorithm_off)
        layout.addWidget(self.note)
        layout.addStretch(1)
        self._refresh()

    # -- public -------------------------------------------------------------------------
    def values(self) -> dict[str, Any]:
        """The panel's settings as QuantConfig field names (plus ``samples``; 0 means all)."""
        values: dict[str, Any] = {name: combo.currentText() for name, combo in self.combos.items()}
        values["group_size"] = self.group_size.value()
        values["samples"] = self.samples.value()
        sqnr = self.min_sqnr.value()
        values["min_output_sqnr_db"] = None if sqnr <= self.min_sqnr.minimum() else sqnr
        values.update(self.target.values())
        values.update(self.algorithms.values())
        values["device"] = self.device.currentText()
        values["fold_batchnorm"] = self.fold_batchnorm.isChecked()
        return values

    def set_devices(self, devices: list[str]) -> None:
        """The devices this machine offers (``available_devices()``: "cpu", "cuda:0", ...): the Device
        row appears when there is more than the CPU, with "auto" (the first GPU) first."""
        current = self.device.currentText()
        self._updating = True
        try:
            self.device.clear()
            self.device.addItems(["auto", *devices])
            self.device.setCurrentText(current if current in ("auto", *devices) else "auto")
        finally:
            self._updating = False
        shown = any(d != "cpu" for d in devices)
        self.device_label.setVisible(shown)
        self.device.setVisible(shown)

    def set_values(self, values: dict[str, Any]) -> None:
        """Apply saved values; unknown keys and impossible choices fall back to allowed ones
        (static mode without a calibration folder comes back when a folder is chosen)."""
        wanted = canonical_choice(values.get("mode"))
        self._wanted_mode = wanted if wanted == "static" and not self._has_calibration else None
        self._updating = True
        try:
            for name, combo in self.combos.items():
                value = canonical_choice(values.get(name))  # the engine's spellings: per_channel, INT8
                if isinstance(value, str) and combo.findText(value) >= 0:
                    combo.setCurrentText(value)
            if isinstance(values.get("group_size"), int):
                self.group_size.setValue(values["group_size"])
            if isinstance(values.get("samples"), int):
                self.samples.setValue(values["samples"])
            sqnr = values.get("min_output_sqnr_db")
            self.min_sqnr.setValue(float(sqnr) if isinstance(sqnr, (int, float)) else 0.0)
            self.target.set_values(values)
            self.algorithms.set_values(values)
            device = values.get("device")
            if isinstance(device, str) and self.device.findText(device) >= 0:
                self.device.setCurrentText(device)
            if isinstance(values.get("fold_batchnorm"), bool):
                self.fold_batchnorm.setChecked(values["fold_batchnorm"])
        finally:
            self._updating = False
        self._edited()

    def set_calibration_available(self, available: bool) -> None:
        """Static mode is offered only with a calibration folder."""
        if available != self._has_calibration:
            self._has_calibration = available
            if available and self._wanted_mode is not None:
                wanted, self._wanted_mode = self._wanted_mode, None
                self._updating = True
                self.combos["mode"].setCurrentText(wanted)
                self._updating = False
            self._edited()

    def persistent_values(self) -> dict[str, Any]:
        """What the settings remember: :meth:`values`, with a mode still waiting for its folder."""
        values = self.values()
        values.update(self.target.persistent_values())
        values.update(self.algorithms.persistent_values())
        if self._wanted_mode is not None:
            values["mode"] = self._wanted_mode
        return values

    def set_metric(self, reason: str | None) -> None:
        """``reason``: why the open script offers no task metric (a metric drop is off then); None: it does."""
        if self.target.set_metric(reason):
            self._edited()

    def set_config(self, config: QuantConfig, samples: int | None = None) -> None:
        """Edit ``config`` (a job's, say): every field kept, those with a widget shown in it."""
        self._base = config
        values: dict[str, Any] = {name: getattr(config, name) for name in self.combos}
        values.update(group_size=config.group_size, min_output_sqnr_db=config.min_output_sqnr_db, samples=samples or 0)
        values.update(
            target_output_sqnr_db=config.target_output_sqnr_db,
            target_metric_drop=config.target_metric_drop,
            fallback=config.fallback,
        )
        values.update(config.algorithm_settings())
        values["device"] = config.device
        values["fold_batchnorm"] = config.fold_batchnorm
        self.set_values(values)

    def config(self, layers: list[str] | None = None) -> QuantConfig:
        """The whole QuantConfig: the edited one with these widgets' values and ``layers``; raises ConfigError."""
        return rules.build_config(self.values(), layers, self._base)

    def problem(self) -> str | None:
        """Why the current settings cannot run (None: they can)."""
        values = self.values()
        missing = rules.missing_calibration(values, self._has_calibration)
        if missing is not None:
            return missing
        try:
            rules.build_config(values, None, self._base)
        except ConfigError as exc:
            return str(exc)
        return None

    # -- internals ------------------------------------------------------------------------
    def _edited(self, *_: Any) -> None:
        if self._updating:
            return
        if self.sender() is self.combos["mode"]:
            self._wanted_mode = None  # the user chose a mode
        self._refresh()
        self.changed.emit()

    def _refresh(self) -> None:
        self._updating = True
        try:
            values, refused = rules.settle(self.values(), self._has_calibration)
            notes = []
            for field, problems in refused.items():
                combo = self.combos[field]
                combo.setCurrentText(values[field])
                model = combo.model()
                assert isinstance(model, QStandardItemModel)
                for row in range(combo.count()):
                    item = model.item(row)
                    reason = problems.get(item.text())
                    item.setEnabled(reason is None)
                    item.setToolTip(reason or "")
                    if reason and field == "mode" and reason != rules.NEEDS_FOLDER:
                        note = f"{reason}: the other modes are off"
                        if note not in notes:
                            notes.append(note)
            for field, reason in rules.applicable(values).items():
                widget = self.widgets[field]
                widget.setEnabled(reason is None)
                self._labels[field].setEnabled(reason is None)
                widget.setToolTip(reason or _HELP[field])
            target_note = self.target.refresh(values["dtype"])
            for key in ("target", "fallback"):
                self._labels[key].setEnabled(self.target.auto.isChecked())
            if target_note is not None:
                notes.append(target_note)
            # A fallback of the algorithm is news the user did not ask for: it is said first.
            notes[:0] = self.algorithms.refresh(
                values["dtype"], values["mode"], values["granularity"], self._has_calibration
            )
            for key in ALGORITHM_ROWS:
                widget = self.algorithms.widget(key)
                self._labels[key].setEnabled(widget.isEnabled())
                self._labels[key].setToolTip(widget.toolTip())
            off = self.algorithms.off_reasons()
            self.algorithm_off.setText("Off here: " + "; ".join(off) if off else "")
            self.algorithm_off.setVisible(bool(off))
            problem = self.problem()
            self.note.setText(problem or (notes[0] if notes else ""))
            self.note.setVisible(bool(self.note.text()))
        finally:
            self._updating = False
