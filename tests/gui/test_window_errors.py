"""Bad input gives an error dialog (message + details) and a log line; the app stays usable."""

from __future__ import annotations

from pathlib import Path

import torch
from conftest import wait_idle
from PySide6.QtWidgets import QMessageBox
from safetensors.torch import load_file

from mono_quant_gui.demo import demo
from mono_quant_gui.window import dialogs


def error_box(window) -> QMessageBox:
    box = window.last_error
    assert box.isVisible() and box.icon() == QMessageBox.Icon.Critical
    return box


def test_a_broken_script_opens_an_error_dialog_and_the_app_goes_on(window, qtbot, tmp_path):
    script = tmp_path / "broken_model.py"
    script.write_text("import torch\nraise RuntimeError('the model script is broken')\n")
    with qtbot.waitSignal(window.runner.errored, timeout=30_000):
        window.open_script(str(script))
    box = error_box(window)
    assert box.windowTitle() == "Could not load the model"
    assert "broken_model.py" in box.text() and "the model script is broken" in box.text() + box.detailedText()
    assert "Traceback" in box.detailedText()
    assert "broken_model.py" in window.log_view.toPlainText()
    assert window.session.loaded is None and not window.commands.quantize.isEnabled()
    box.close()
    window.open_demo("cnn")
    wait_idle(qtbot, window)
    assert window.session.loaded is not None and window.commands.quantize.isEnabled()


def test_a_checkpoint_of_another_model_is_refused_with_a_dialog(window, qtbot):
    with qtbot.waitSignal(window.runner.errored, timeout=30_000):
        window.open_script(str(demo("cnn").script), str(demo("transformer").checkpoint))
    box = error_box(window)
    assert "model.safetensors" in box.text() and "fits the model" in box.text()
    assert window.session.loaded is None


def partial_checkpoint(tmp_path):
    state = load_file(demo("cnn").checkpoint)
    del state["classifier.4.bias"]
    path = tmp_path / "partial.pt"
    torch.save(state, path)
    return path


def test_a_key_mismatch_is_shown_and_the_user_may_stop(window, qtbot, tmp_path, monkeypatch):
    shown = []
    monkeypatch.setattr(dialogs, "confirm_key_mismatch", lambda parent, summary, details: shown.append(details))
    with qtbot.waitSignal(window.runner.finished, timeout=30_000):
        window.open_script(str(demo("cnn").script), str(partial_checkpoint(tmp_path)))
    assert shown and "1 missing key: classifier.4.bias" in shown[0]
    assert window.session.loaded is None


def test_a_key_mismatch_may_be_accepted(window, qtbot, tmp_path, monkeypatch):
    monkeypatch.setattr(dialogs, "confirm_key_mismatch", lambda parent, summary, details: True)
    with qtbot.waitSignal(window.runner.finished, timeout=30_000):
        window.open_script(str(demo("cnn").script), str(partial_checkpoint(tmp_path)))
    assert window.session.loaded is not None
    assert window.session.loaded.keys.missing == ["classifier.4.bias"]


def test_several_models_in_a_script_offer_a_choice(window, qtbot, tmp_path, monkeypatch):
    script = tmp_path / "two_models.py"
    script.write_text(
        "from torch import nn\n"
        "class Small(nn.Module):\n    def __init__(self):\n        super().__init__(); self.fc = nn.Linear(2, 2)\n"
        "class Large(nn.Module):\n    def __init__(self):\n        super().__init__(); self.fc = nn.Linear(4, 4)\n"
    )
    offered = []
    monkeypatch.setattr(dialogs, "choose_entry", lambda parent, path, names: offered.append(names) or "Large")
    window.open_script(str(script))
    wait_idle(qtbot, window)
    assert offered == [["Small", "Large"]]
    assert type(window.session.model).__name__ == "Large"


def test_choosing_no_model_stops_loading(window, qtbot, tmp_path, monkeypatch):
    script = tmp_path / "two_factories.py"
    script.write_text(
        "from torch import nn\n"
        "def build_model():\n    return nn.Linear(2, 2)\n"
        "def make_model():\n    return nn.Linear(3, 3)\n"
    )
    monkeypatch.setattr(dialogs, "choose_entry", lambda parent, path, names: None)
    with qtbot.waitSignal(window.runner.finished, timeout=30_000):
        window.open_script(str(script))
    assert window.session.loaded is None


def test_an_empty_calibration_folder_is_an_error_in_the_panel(window, qtbot, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with qtbot.waitSignal(window.runner.errored, timeout=30_000):
        window.set_calibration_folder(str(empty))
    assert window.calibration_panel.dry_run.text().startswith("✗")
    assert "empty" in window.last_error.text()


def test_a_refused_checkpoint_leaves_the_models_name_in_title_and_save_as(window, qtbot, tmp_path, monkeypatch):
    """After a refused load the window keeps the previous model: its title and the Save As name
    are that model's checkpoint, not the refused one."""
    window.open_demo("cnn")
    wait_idle(qtbot, window)
    with qtbot.waitSignal(window.runner.finished, timeout=60_000):
        window.start_quantize()
    assert "model.safetensors" in window.windowTitle()
    monkeypatch.setattr(dialogs, "confirm_key_mismatch", lambda parent, summary, details: False)
    with qtbot.waitSignal(window.runner.finished, timeout=30_000):
        window.open_checkpoint(str(partial_checkpoint(tmp_path)))
    # The window goes back to the model on screen: its inputs, its result (defect 4 of issue 12).
    assert window.session.checkpoint.endswith("model.safetensors")
    assert window.session.result is not None
    assert "partial" not in window.windowTitle() and "model.safetensors" in window.windowTitle()
    suggested = []
    monkeypatch.setattr(dialogs, "ask_save_path", lambda parent, name: suggested.append(name) or ("", ""))
    window.save_as()
    assert [Path(name).name for name in suggested] == ["model.int8.safetensors"]
