"""Settings, recent files, geometry and dock layout survive a restart of the main window."""

from __future__ import annotations

from conftest import wait_idle

from mono_quant_gui.demo import demo


def test_settings_and_layout_survive_a_restart(make_window, qtbot, monkeypatch):
    first = make_window()
    first.open_script(str(demo("cnn").script))
    wait_idle(qtbot, first)
    panel = first.settings_panel
    panel.combos["dtype"].setCurrentText("int4")
    panel.combos["granularity"].setCurrentText("per-group")
    panel.group_size.setValue(32)
    panel.samples.setValue(24)
    panel.combos["on_failure"].setCurrentText("warn")
    panel.min_sqnr.setValue(18.5)
    values = panel.values()
    first.log_dock.hide()
    first.close()
    saved = first.store.geometry()
    assert saved is not None
    # The offscreen screen (800x800) clamps real geometry, so check the bytes reach restoreGeometry.
    from mono_quant_gui.window.main_window import MainWindow

    restored = []
    original = MainWindow.restoreGeometry
    monkeypatch.setattr(MainWindow, "restoreGeometry", lambda self, g: restored.append(g) or original(self, g))

    second = make_window()
    assert second.settings_panel.values() == values
    assert values["mode"] == "weight-only" and values["group_size"] == 32
    assert restored == [saved]
    assert second.log_dock.isHidden() and not second.module_dock.isHidden()
    assert second.store.recent("script") == [str(demo("cnn").script.resolve())]
    recent = [a.text() for a in second.commands.recent_menu.actions() if a.text()]
    assert "model.py — cnn" in recent  # the name and its folder


def test_a_fresh_window_has_empty_hints(window):
    assert window.modules.currentWidget() is window.modules.hint
    assert window.modules.hint.title.text() == "No model"
    assert window.dashboard.currentWidget() is window.welcome
    assert window.welcome.title.text().replace("\u2011", "-") == "Welcome to mono-quant"
    assert window.calibration_panel.stack.currentIndex() == 0
    assert not window.commands.quantize.isEnabled() and not window.commands.save_as.isEnabled()
    assert window.commands.quantize.toolTip() == "Open a model script first (Ctrl+O)"


def test_recent_files_reopen(make_window, qtbot):
    first = make_window()
    first.set_calibration_folder(str(demo("cnn").calibration))
    wait_idle(qtbot, first)
    first.close()
    second = make_window()
    entry = next(a for a in second.commands.recent_menu.actions() if a.text() == "calibration — cnn")
    entry.trigger()
    assert second.session.calibration == str(demo("cnn").calibration.resolve())
    wait_idle(qtbot, second)
    second.commands.clear_recent.trigger()
    assert second.store.recent("calibration") == []


def test_static_mode_comes_back_once_a_folder_is_chosen(make_window, qtbot):
    first = make_window()
    first.open_demo("cnn")
    wait_idle(qtbot, first)
    first.settings_panel.combos["mode"].setCurrentText("static")
    first.close()
    second = make_window()  # no calibration folder yet: static cannot be chosen, but is remembered
    assert second.settings_panel.combos["mode"].currentText() != "static"
    second.save_persistent()
    assert second.store.quant_settings()["mode"] == "static"
    second.set_calibration_folder(str(demo("cnn").calibration))
    assert second.settings_panel.combos["mode"].currentText() == "static"


def test_recent_lists_what_loaded_with_its_folder_and_reopens_the_pair(make_window, qtbot, tmp_path, monkeypatch):
    from mono_quant_gui.window import dialogs

    monkeypatch.setattr(dialogs, "show_error", lambda *a, **k: None)
    first = make_window()
    cnn = demo("cnn")
    first.open_script(str(cnn.script), str(cnn.checkpoint))
    wait_idle(qtbot, first)
    (tmp_path / "broken.py").write_text("def build_model(:\n")
    first.open_script(str(tmp_path / "broken.py"))  # fails: not listed
    wait_idle(qtbot, first)
    first.close()
    second = make_window()
    labels = [a.text() for a in second.commands.recent_menu.actions() if a.text()]
    assert "model.py + model.safetensors — cnn" in labels
    assert not any("broken.py" in label for label in labels)
    entry = next(a for a in second.commands.recent_menu.actions() if a.text() == "model.py + model.safetensors — cnn")
    entry.trigger()
    wait_idle(qtbot, second)
    assert second.session.loaded.source["checkpoint_path"] == str(cnn.checkpoint.resolve())


def test_changing_samples_previews_the_folder_again(window, qtbot, monkeypatch):
    import mono_quant_gui.run.tasks as tasks

    window.open_demo("cnn")
    wait_idle(qtbot, window)
    asked = []
    real = tasks.preview_task
    monkeypatch.setattr(tasks, "preview_task", lambda ctx, **kw: (asked.append(kw["samples"]), real(ctx, **kw))[1])
    for n in (5, 6, 7):  # stepped up with the arrows: one preview, of the last value
        window.settings_panel.samples.setValue(n)
    qtbot.waitUntil(lambda: asked == [7], timeout=10_000)
    wait_idle(qtbot, window)
    assert asked == [7]
    assert window.calibration_panel.summary.text().startswith("7 ")
