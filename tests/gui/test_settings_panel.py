"""Settings: impossible combinations are disabled with the engine's reason, and the panel builds QuantConfig."""

from __future__ import annotations

import pytest
from PySide6.QtGui import QStandardItemModel

from mono_quant_gui.settings import settings_rules as rules
from mono_quant_gui.settings.settings_panel import SettingsPanel


@pytest.fixture
def panel(qtbot):
    p = SettingsPanel()
    qtbot.addWidget(p)
    return p


def item(panel, field, text):
    combo = panel.combos[field]
    model = combo.model()
    assert isinstance(model, QStandardItemModel)
    return model.item(combo.findText(text))


def test_defaults_match_quantconfig(panel):
    config = panel.config(["fc"])
    assert (config.dtype, config.mode, config.scheme, config.granularity) == (
        "int8",
        "dynamic",
        "symmetric",
        "per-channel",
    )
    assert config.layers == ["fc"] and config.min_output_sqnr_db is None
    assert panel.values()["samples"] == 0


def test_static_needs_a_calibration_folder(panel):
    static = item(panel, "mode", "static")
    assert not static.isEnabled()
    assert static.toolTip() == rules.NEEDS_FOLDER
    panel.set_calibration_available(True)
    assert static.isEnabled()
    panel.combos["mode"].setCurrentText("static")
    assert panel.config().mode == "static" and panel.problem() is None
    panel.set_calibration_available(False)
    assert panel.combos["mode"].currentText() == "dynamic"  # moved back to an allowed mode


def test_int4_forces_weight_only(panel):
    panel.combos["dtype"].setCurrentText("int4")
    assert panel.combos["mode"].currentText() == "weight-only"
    dynamic = item(panel, "mode", "dynamic")
    assert not dynamic.isEnabled()
    # Said of the option, not of a value the panel never took ("got mode='dynamic'").
    assert dynamic.toolTip() == "int4 is weight-only"
    assert item(panel, "mode", "static").toolTip() == "int4 is weight-only"
    assert panel.note.text() == "int4 is weight-only: the other modes are off"
    assert panel.config().mode == "weight-only"


def test_per_group_only_for_weight_only_and_group_size_only_for_per_group(panel):
    per_group = item(panel, "granularity", "per-group")
    assert not per_group.isEnabled()
    assert per_group.toolTip() == "per-group needs mode weight-only"
    assert not panel.group_size.isEnabled()
    panel.combos["mode"].setCurrentText("weight-only")
    assert per_group.isEnabled()
    panel.combos["granularity"].setCurrentText("per-group")
    assert panel.group_size.isEnabled()
    panel.group_size.setValue(64)
    assert panel.config().group_size == 64
    panel.combos["mode"].setCurrentText("dynamic")
    assert panel.combos["granularity"].currentText() == "per-channel"


def test_casts_disable_what_does_not_apply(panel):
    panel.combos["dtype"].setCurrentText("fp16")
    for name in ("mode", "scheme", "granularity", "group_size", "observer"):
        assert not panel.widgets[name].isEnabled(), name
    assert "fp16 is a plain cast" in panel.combos["scheme"].toolTip()
    assert panel.config().dtype == "fp16"


def test_observer_applies_to_static_mode_only(panel):
    assert not panel.combos["observer"].isEnabled()
    panel.set_calibration_available(True)
    panel.combos["mode"].setCurrentText("static")
    assert panel.combos["observer"].isEnabled()


def test_config_errors_are_shown_with_the_engines_text(panel):
    panel.combos["mode"].setCurrentText("weight-only")
    panel.combos["granularity"].setCurrentText("per-group")
    panel.group_size.setValue(63)
    assert panel.problem() == "group_size: 63 must be an even integer >= 2"
    assert panel.note.text() == panel.problem() and not panel.note.isHidden()


def test_values_round_trip_and_bad_saved_values_fall_back(panel, qtbot):
    panel.set_calibration_available(True)
    panel.set_values(
        {
            "dtype": "int8",
            "mode": "static",
            "observer": "histogram",
            "samples": 16,
            "on_failure": "warn",
            "min_output_sqnr_db": 25.0,
        }
    )
    values = panel.values()
    other = SettingsPanel()
    qtbot.addWidget(other)
    other.set_calibration_available(True)
    other.set_values(values)
    assert other.values() == values
    config = other.config()
    assert (config.observer, config.on_failure, config.min_output_sqnr_db) == ("histogram", "warn", 25.0)
    other.set_values({"dtype": "int4", "mode": "static", "granularity": "sideways", "samples": "x"})
    assert other.values()["mode"] == "weight-only" and other.values()["samples"] == 16


def test_every_option_is_offered_in_some_state():
    for field in rules.ORDER[1:]:
        for option in rules.CHOICES[field]:
            values = {**rules.DEFAULTS, "mode": "weight-only", field: option}
            assert rules.option_problem(values, field, option, True) is None, (field, option)
