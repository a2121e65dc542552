"""The BatchNorm folding checkbox: off by default, its value in the run's QuantConfig and the
remembered settings, a job's value shown back, a tooltip that says what it does."""

from __future__ import annotations

from mono_quant_core import QuantConfig
from mono_quant_gui.settings.settings_panel import SettingsPanel


def test_fold_batchnorm_checkbox_reaches_the_config(qtbot):
    panel = SettingsPanel()
    qtbot.addWidget(panel)
    panel.show()
    assert panel.fold_batchnorm.isVisible() and not panel.fold_batchnorm.isChecked()
    assert "BatchNorm" in panel.fold_batchnorm.toolTip()
    assert panel.config().fold_batchnorm is False
    with qtbot.waitSignal(panel.changed):
        panel.fold_batchnorm.setChecked(True)
    assert panel.config().fold_batchnorm is True
    assert panel.persistent_values()["fold_batchnorm"] is True
    panel.set_config(QuantConfig(fold_batchnorm=False))
    assert not panel.fold_batchnorm.isChecked()
    panel.set_values({"fold_batchnorm": True})
    assert panel.config().fold_batchnorm is True
