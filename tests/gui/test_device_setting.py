"""The Device setting (issue 16): a row only when the machine has a CUDA GPU, its value in the run's
QuantConfig, and a job's device shown back."""

from __future__ import annotations

from mono_quant_core import QuantConfig
from mono_quant_gui.settings.settings_panel import SettingsPanel


def test_device_row_only_with_a_gpu_and_its_value_reaches_the_config(qtbot):
    panel = SettingsPanel()
    qtbot.addWidget(panel)
    panel.show()
    panel.set_devices(["cpu"])  # this machine: no GPU, no row
    assert not panel.device.isVisible() and not panel.device_label.isVisible()
    assert panel.config().device == "auto"
    panel.set_devices(["cpu", "cuda:0", "cuda:1"])
    assert panel.device.isVisible() and panel.device_label.isVisible()
    assert [panel.device.itemText(i) for i in range(panel.device.count())] == ["auto", "cpu", "cuda:0", "cuda:1"]
    with qtbot.waitSignal(panel.changed):
        panel.device.setCurrentText("cuda:1")
    assert panel.config().device == "cuda:1"
    panel.set_devices(["cpu", "cuda:0"])  # the chosen device is gone: back to auto
    assert panel.config().device == "auto"
    panel.set_config(QuantConfig(device="cpu"))
    assert panel.device.currentText() == "cpu" and panel.config().device == "cpu"


def test_the_window_offers_the_devices_the_engine_finds(window, qtbot):
    from conftest import wait_idle

    window.open_demo("cnn")
    wait_idle(qtbot, window)
    assert not window.settings_panel.device.isVisible()  # no GPU on this machine
    assert window.settings_panel.device.findText("cpu") >= 0
