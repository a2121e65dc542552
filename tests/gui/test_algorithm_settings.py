"""The settings panel's Algorithm section: options off with the engine's reason where they do not
apply, falling back visibly, reaching the QuantConfig the window runs, and remembered."""

from __future__ import annotations

import pytest
from conftest import wait_idle
from PySide6.QtGui import QStandardItemModel

from mono_quant_core.config import algorithm_problem
from mono_quant_gui.settings.algorithm_fields import NEEDS_SAMPLES
from mono_quant_gui.settings.settings_panel import SettingsPanel


@pytest.fixture
def panel(qtbot):
    p = SettingsPanel()
    qtbot.addWidget(p)
    return p


def algorithm_item(panel, key):
    combo = panel.algorithms.algorithm
    model = combo.model()
    assert isinstance(model, QStandardItemModel)
    return model.item(combo.findData(key))


def choose(panel, key):
    panel.algorithms.algorithm.setCurrentIndex(panel.algorithms.algorithm.findData(key))


def test_options_follow_dtype_mode_and_calibration_with_reasons(panel):
    a = panel.algorithms
    # int8 dynamic, no calibration folder: HQQ applies; GPTQ does not (mode) ; SmoothQuant waits for samples.
    assert algorithm_item(panel, "hqq").isEnabled()
    gptq = algorithm_item(panel, "gptq")
    assert not gptq.isEnabled() and gptq.toolTip() == algorithm_problem("gptq", "int8", "dynamic")
    assert not a.smoothquant.isEnabled() and a.smoothquant.toolTip() == "SmoothQuant " + NEEDS_SAMPLES
    panel.set_calibration_available(True)
    assert a.smoothquant.isEnabled() and a.smoothquant.toolTip().startswith("SmoothQuant:")
    assert not a.bias_correction.isEnabled()  # dynamic mode
    panel.combos["mode"].setCurrentText("weight-only")
    assert algorithm_item(panel, "gptq").isEnabled() and a.bias_correction.isEnabled()
    assert not a.smoothquant.isEnabled() and "int8 with mode static or dynamic" in a.smoothquant.toolTip()
    choose(panel, "gptq")
    assert a.gptq_damp.isEnabled() and not a.hqq_iterations.isEnabled()
    assert "calibration" in a.explain.text()
    # fp16 is a cast: GPTQ falls back to round to nearest, and the note says so.
    panel.combos["dtype"].setCurrentText("fp16")
    assert a.current() == "rtn" and not algorithm_item(panel, "gptq").isEnabled()
    assert panel.note.text().startswith("GPTQ: GPTQ rounds int8 and int4 weights")
    assert panel.config().algorithm == "rtn"


def test_values_reach_the_config(panel):
    panel.set_calibration_available(True)
    panel.combos["dtype"].setCurrentText("int4")
    panel.combos["granularity"].setCurrentText("per-group")
    choose(panel, "gptq")
    a = panel.algorithms
    a.gptq_damp.setValue(0.05)
    a.gptq_act_order.setChecked(True)
    a.gptq_block_size.setValue(64)
    a.bias_correction.setChecked(True)
    c = panel.config(["fc"])
    assert (c.dtype, c.mode, c.algorithm, c.gptq_damp, c.gptq_act_order, c.gptq_block_size, c.bias_correction) == (
        "int4", "weight-only", "gptq", 0.05, True, 64, True,
    )  # fmt: skip
    assert panel.problem() is None
    panel.combos["dtype"].setCurrentText("int8")
    panel.combos["mode"].setCurrentText("static")
    assert panel.config().algorithm == "rtn"  # GPTQ is weight-only: fell back
    a.smoothquant.setChecked(True)
    a.smoothquant_alpha.setValue(0.8)
    c = panel.config()
    assert (c.smoothquant_alpha, c.bias_correction) == (0.8, True)


def test_a_job_waiting_for_a_folder_keeps_its_algorithm(panel):
    from mono_quant_core.config import QuantConfig

    panel.set_config(QuantConfig(dtype="int4", mode="weight-only", algorithm="gptq", gptq_damp=0.02))
    assert panel.algorithms.current() == "rtn" and "GPTQ: " + NEEDS_SAMPLES in panel.note.text()
    assert panel.persistent_values()["algorithm"] == "gptq"
    panel.set_calibration_available(True)
    c = panel.config()
    assert (c.algorithm, c.gptq_damp) == ("gptq", 0.02)


def test_the_window_remembers_and_runs_the_algorithm(window, qtbot):
    window.open_demo("cnn")
    wait_idle(qtbot, window)
    panel = window.settings_panel
    choose(panel, "hqq")
    panel.algorithms.hqq_iterations.setValue(5)
    wait_idle(qtbot, window)
    saved = window.store.quant_settings()
    assert (saved["algorithm"], saved["hqq_iterations"]) == ("hqq", 5)
    fresh = SettingsPanel()
    qtbot.addWidget(fresh)
    fresh.set_values(saved)
    c = fresh.config()
    assert (c.algorithm, c.hqq_iterations) == ("hqq", 5)
    assert window.running.quantize_problem() is None
