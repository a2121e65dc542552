"""Drag and drop anywhere on the window: .py → script, checkpoint → checkpoint, folder → calibration."""

from __future__ import annotations

from conftest import wait_idle
from gui_helpers import drop_paths

from mono_quant_gui.demo import demo


def test_dropping_a_script_loads_it(window, qtbot):
    event = drop_paths(window.dashboard, [str(demo("cnn").script)])
    assert event.isAccepted()
    assert window.session.script == str(demo("cnn").script)
    wait_idle(qtbot, window)
    assert type(window.session.model).__name__ == "DigitsCNN"


def test_dropping_a_checkpoint_sets_it_and_reloads_the_model(window, qtbot):
    window.open_script(str(demo("cnn").script))
    wait_idle(qtbot, window)
    assert window.session.loaded.keys.checkpoint is None
    drop_paths(window.modules.view.viewport(), [str(demo("cnn").checkpoint)])
    assert window.session.checkpoint == str(demo("cnn").checkpoint)
    wait_idle(qtbot, window)
    assert window.session.loaded.keys.checkpoint == "model.safetensors"


def test_dropping_a_folder_sets_the_calibration_folder(window, qtbot):
    drop_paths(window.log_view.viewport(), [str(demo("cnn").calibration)])
    assert window.session.calibration == str(demo("cnn").calibration)
    wait_idle(qtbot, window)
    assert window.calibration_panel.table.rowCount() == 40
    assert window.settings_panel.combos["mode"].model().item(2).isEnabled()  # static is offered now


def test_dropping_script_and_checkpoint_together_loads_once_with_both(window, qtbot):
    loads = []
    window.runner.started.connect(lambda task: loads.append(task.kind))
    drop_paths(window.settings_panel, [str(demo("cnn").checkpoint), str(demo("cnn").script)])
    wait_idle(qtbot, window)
    assert loads == ["load"]
    assert window.session.loaded.keys.checkpoint == "model.safetensors"


def test_unknown_files_are_ignored_with_a_message(window, tmp_path):
    other = tmp_path / "notes.txt"
    other.write_text("hello")
    drop_paths(window.dashboard, [str(other)])
    assert window.session.script is None and window.session.calibration is None
    assert "notes.txt" in window.statusBar().currentMessage()


def test_dropping_a_job_file_fills_the_window(window, qtbot, tmp_path):
    job = tmp_path / "job.toml"
    cnn = demo("cnn")
    job.write_text(f"""
[model]
script = "{cnn.script}"
checkpoint = "{cnn.checkpoint}"

[quantization]
dtype = "int8"
mode = "static"
observer = "percentile"
exclude = ["classifier.*"]

[calibration]
folder = "{cnn.calibration}"
samples = 12

[output]
path = "out.safetensors"
""")
    drop_paths(window.dashboard, [str(job)])
    wait_idle(qtbot, window)
    values = window.settings_panel.values()
    assert (values["mode"], values["observer"], values["samples"]) == ("static", "percentile", 12)
    assert window.session.calibration == str(cnn.calibration)
    assert window.modules.model.checked_names() == ["features.0", "features.2", "features.5"]


def test_a_bad_job_file_gives_an_error_dialog(window, tmp_path):
    job = tmp_path / "bad.toml"
    job.write_text("[quantization]\ndtype = 'int3'\n")
    drop_paths(window.dashboard, [str(job)])
    assert "bad.toml" in window.last_error.text()
    assert window.session.script is None
