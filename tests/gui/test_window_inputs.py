"""One state for the window's inputs (issue 12, defects 1, 2, 3, 4): Save As proposes the
model's folder and name, another model clears the last one's figures, a failed load leaves
exactly the last model that loaded, and a partly matching checkpoint stops by default."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from conftest import wait_idle
from PySide6.QtWidgets import QMessageBox

from mono_quant_gui.demo import demo
from mono_quant_gui.window import dialogs

RUN_TIMEOUT = 60_000


@pytest.fixture
def user_demo(tmp_path):
    """The CNN demo copied into a folder of the user's: script (with the held-out digits its evaluate()
    reads), checkpoint, calibration folder."""
    example = demo("cnn")
    shutil.copy(example.script, tmp_path / "digits.py")
    shutil.copy(example.script.with_name("heldout.safetensors"), tmp_path / "heldout.safetensors")
    shutil.copy(example.checkpoint, tmp_path / "digits-v2.safetensors")
    shutil.copytree(example.calibration, tmp_path / "calib")
    return tmp_path


def run(window, qtbot):
    with qtbot.waitSignal(window.runner.finished, timeout=RUN_TIMEOUT):
        window.start_quantize()


def suggestions(window, monkeypatch) -> list[str]:
    asked: list[str] = []
    monkeypatch.setattr(dialogs, "ask_save_path", lambda parent, name: asked.append(name) or ("", ""))
    window.save_as()
    return asked


def test_save_as_proposes_the_checkpoints_folder_and_name_never_the_calibration_folder(
    window, qtbot, user_demo, monkeypatch
):
    window.open_script(str(user_demo / "digits.py"), str(user_demo / "digits-v2.safetensors"))
    wait_idle(qtbot, window)
    window.set_calibration_folder(str(user_demo / "calib"))  # the last folder a dialog used
    wait_idle(qtbot, window)
    run(window, qtbot)
    assert suggestions(window, monkeypatch) == [str(user_demo / "digits-v2.int8.safetensors")]
    # After a save into another folder, that folder is proposed next.
    out = user_demo / "out"
    out.mkdir()
    monkeypatch.setattr(dialogs, "ask_save_path", lambda parent, name: (str(out / "a.safetensors"), ""))
    with qtbot.waitSignal(window.runner.finished, timeout=RUN_TIMEOUT):
        window.save_as()
    assert (out / "a.safetensors").is_file()
    assert suggestions(window, monkeypatch) == [str(out / "digits-v2.int8.safetensors")]
    assert not list((user_demo / "calib").glob("*.safetensors"))


def test_the_demo_is_saved_outside_the_application(window, qtbot, monkeypatch):
    window.open_demo("cnn")
    wait_idle(qtbot, window)
    run(window, qtbot)
    (suggested,) = suggestions(window, monkeypatch)
    assert Path(suggested).name == "model.int8.safetensors"
    assert Path(suggested).parent != demo("cnn").calibration
    assert Path(suggested).parent != demo("cnn").checkpoint.parent  # the installed package


def test_another_model_clears_the_last_ones_figures(window, qtbot, user_demo):
    window.open_demo("cnn")
    wait_idle(qtbot, window)
    run(window, qtbot)
    assert window.dashboard.sqnr_plot.bar_count() == 5 and window.commands.save_as.isEnabled()
    window.open_script(str(user_demo / "digits.py"), str(user_demo / "digits-v2.safetensors"))
    wait_idle(qtbot, window)
    assert window.session.result is None and not window.commands.save_as.isEnabled()
    assert window.dashboard.sqnr_plot.bar_count() == 0
    assert window.dashboard.currentWidget() is window.dashboard.hint
    assert window.dashboard.output_card.value.text() == "—"  # not the last run's SQNR
    assert window.file_label.text() == ""


def test_another_calibration_folder_clears_the_result(window, qtbot, user_demo):
    window.open_demo("cnn")
    wait_idle(qtbot, window)
    run(window, qtbot)
    window.set_calibration_folder(str(user_demo / "calib"))
    wait_idle(qtbot, window)
    assert window.session.result is None and window.dashboard.sqnr_plot.bar_count() == 0


def test_a_broken_script_leaves_the_last_model_and_the_checkpoint_loads_into_it(window, qtbot, user_demo, monkeypatch):
    monkeypatch.setattr(dialogs, "show_error", lambda *a, **k: None)
    window.open_script(str(user_demo / "digits.py"), str(user_demo / "digits-v2.safetensors"))
    wait_idle(qtbot, window)
    (user_demo / "broken.py").write_text("def build_model(:\n")
    with qtbot.waitSignal(window.runner.errored, timeout=RUN_TIMEOUT):
        window.open_script(str(user_demo / "broken.py"))
    wait_idle(qtbot, window)
    assert window.session.script == str(user_demo / "digits.py")
    assert "broken" not in window.windowTitle() and "digits-v2.safetensors" in window.windowTitle()
    # Open Checkpoint now loads into the model on screen, not the broken script again.
    shutil.copy(user_demo / "digits-v2.safetensors", user_demo / "other.safetensors")
    with qtbot.waitSignal(window.runner.finished, timeout=RUN_TIMEOUT):
        window.open_checkpoint(str(user_demo / "other.safetensors"))
    wait_idle(qtbot, window)
    assert window.session.loaded.source["checkpoint_path"].endswith("other.safetensors")
    assert window.session.loaded.source["script_path"].endswith("digits.py")


@pytest.mark.parametrize("route", ["dialog", "drop"])
def test_one_rule_for_a_script_opened_alone(window, qtbot, user_demo, monkeypatch, route):
    """The same script again keeps its checkpoint; another script opens without one."""
    from gui_helpers import drop_paths

    def open_alone(path: Path) -> None:
        if route == "dialog":
            monkeypatch.setattr(dialogs, "ask_open_script", lambda parent, folder: str(path))
            window.choose_script()
        else:
            drop_paths(window.dashboard, [str(path)])
        wait_idle(qtbot, window)

    window.open_script(str(user_demo / "digits.py"), str(user_demo / "digits-v2.safetensors"))
    wait_idle(qtbot, window)
    open_alone(user_demo / "digits.py")
    assert window.session.checkpoint == str(user_demo / "digits-v2.safetensors")
    shutil.copy(user_demo / "digits.py", user_demo / "other.py")
    open_alone(user_demo / "other.py")
    assert window.session.checkpoint is None
    assert window.session.loaded.source.get("checkpoint_path") is None


def test_a_checkpoint_chosen_first_waits_for_its_script(window, qtbot, user_demo):
    window.open_checkpoint(str(user_demo / "digits-v2.safetensors"))
    window.open_script(str(user_demo / "digits.py"))
    wait_idle(qtbot, window)
    assert window.session.loaded.source["checkpoint_path"].endswith("digits-v2.safetensors")


def test_the_mismatch_question_stops_by_default(qtbot):
    box, go = dialogs.key_mismatch_box(None, "x.pt does not match the model in m.py.", "1 missing key: fc.bias")
    qtbot.addWidget(box)
    stop = box.defaultButton()
    assert stop is not None and stop is not go and stop.text() == "Stop"
    assert box.escapeButton() is stop
    assert box.buttonRole(go) == QMessageBox.ButtonRole.AcceptRole


def saved_output(window, qtbot, user_demo, monkeypatch) -> Path:
    window.open_script(str(user_demo / "digits.py"), str(user_demo / "digits-v2.safetensors"))
    wait_idle(qtbot, window)
    run(window, qtbot)
    target = user_demo / "digits-v2.int8.safetensors"
    monkeypatch.setattr(dialogs, "ask_save_path", lambda parent, name: (str(target), ""))
    with qtbot.waitSignal(window.runner.finished, timeout=RUN_TIMEOUT):
        window.save_as()
    return target


def assert_shows_quantized(window, target: Path, sqnr_text: str) -> None:
    assert "digits-v2.int8.safetensors" in window.windowTitle()
    assert window.dashboard.sqnr_plot.bar_count() == 5
    assert window.dashboard.output_card.value.text() == sqnr_text
    assert window.commands.save_as.isEnabled()
    assert not window.commands.quantize.isEnabled()
    assert "quantized already" in window.commands.quantize.toolTip()
    assert window.session.result.report.file_bytes == target.stat().st_size


def test_an_output_opened_as_a_checkpoint_is_offered_as_a_quantized_model(window, qtbot, user_demo, monkeypatch):
    target = saved_output(window, qtbot, user_demo, monkeypatch)
    sqnr_text = window.dashboard.output_card.value.text()
    asked = []
    monkeypatch.setattr(dialogs, "confirm_open_quantized", lambda parent, message: asked.append(message) or True)
    window.open_checkpoint(str(target))
    wait_idle(qtbot, window)
    assert asked == ["digits-v2.int8.safetensors is a mono-quant output (int8, dynamic)."]
    assert_shows_quantized(window, target, sqnr_text)
    # Saved again under another name: the same tensors.
    again = user_demo / "again.safetensors"
    monkeypatch.setattr(dialogs, "ask_save_path", lambda parent, name: (str(again), ""))
    with qtbot.waitSignal(window.runner.finished, timeout=RUN_TIMEOUT):
        window.save_as()
    from safetensors.torch import load_file

    got, want = load_file(again), load_file(target)
    assert got.keys() == want.keys() and all(got[k].equal(want[k]) for k in want)


def test_declining_keeps_the_model_on_screen(window, qtbot, user_demo, monkeypatch):
    target = saved_output(window, qtbot, user_demo, monkeypatch)
    monkeypatch.setattr(dialogs, "confirm_open_quantized", lambda parent, message: False)
    window.open_checkpoint(str(target))
    wait_idle(qtbot, window)
    assert window.session.checkpoint == str(user_demo / "digits-v2.safetensors")
    assert window.commands.quantize.isEnabled()


def test_file_open_quantized_finds_the_script_beside_the_file(window, qtbot, user_demo, monkeypatch, make_window):
    target = saved_output(window, qtbot, user_demo, monkeypatch)
    sqnr_text = window.dashboard.output_card.value.text()
    fresh = make_window()
    monkeypatch.setattr(dialogs, "ask_open_quantized", lambda parent, folder: str(target))
    fresh.commands.open_quantized.trigger()
    wait_idle(qtbot, fresh)
    assert_shows_quantized(fresh, target, sqnr_text)
    # The settings read as the file's: its dtype and mode (static comes back with a folder).
    assert fresh.settings_panel.combos["dtype"].currentText() == "int8"
    assert fresh.settings_panel.persistent_values()["mode"] == window.session.result.config.mode


def test_the_script_beside_a_safetensors_output_is_found_without_torch(user_demo, window, qtbot, monkeypatch):
    """Open Quantized runs on the GUI thread: a .safetensors header is read as JSON (no engine reader)."""
    from mono_quant_gui.run import tasks

    target = saved_output(window, qtbot, user_demo, monkeypatch)
    import mono_quant_core

    monkeypatch.setattr(mono_quant_core, "read_metadata", lambda path: pytest.fail("used the engine's reader"))
    assert tasks.script_beside(str(target)) == str(user_demo / "digits.py")
    (user_demo / "digits.py").rename(user_demo / "moved.py")
    assert tasks.script_beside(str(target)) is None
    (user_demo / "junk.safetensors").write_bytes(b"\xff" * 16)
    assert tasks.script_beside(str(user_demo / "junk.safetensors")) is None
