"""First run: the central area is a start page with Open script… and Open the demo, which work."""

from __future__ import annotations

from conftest import wait_idle
from PySide6.QtCore import Qt
from PySide6.QtGui import QDesktopServices

from mono_quant_gui.demo import demo
from mono_quant_gui.window import dialogs, help_menu


def test_a_first_run_shows_where_to_start(window):
    assert window.dashboard.currentWidget() is window.welcome
    assert window.welcome.isVisible()
    assert window.welcome.title.text().replace("\u2011", "-") == "Welcome to mono-quant"
    assert window.welcome.open_script_button.text() == "Open script…"
    assert window.welcome.open_demo_button.text() == "Open the demo"
    assert window.welcome.open_script_button.isVisible() and window.welcome.open_demo_button.isVisible()
    assert window.modules.hint.title.text() == "No model"


def test_open_script_button_asks_for_a_script(window, qtbot, monkeypatch):
    asked = []
    monkeypatch.setattr(dialogs, "ask_open_script", lambda parent, folder: asked.append(folder))
    with qtbot.waitSignal(window.commands.open_script.triggered, timeout=1000):
        qtbot.mouseClick(window.welcome.open_script_button, Qt.MouseButton.LeftButton)
    assert len(asked) == 1 and window.session.script is None


def test_open_the_demo_button_opens_the_demo(window, qtbot):
    with qtbot.waitSignal(window.commands.open_demo.triggered, timeout=1000):
        qtbot.mouseClick(window.welcome.open_demo_button, Qt.MouseButton.LeftButton)
    assert window.session.script == str(demo("cnn").script)
    assert window.session.calibration == str(demo("cnn").calibration)
    wait_idle(qtbot, window)
    assert window.dashboard.currentWidget() is window.dashboard.hint
    assert window.dashboard.hint.title.text() == "Ready to quantize"
    assert window.modules.currentWidget() is window.modules.page


def test_the_guide_link_opens_the_user_guide(window, monkeypatch):
    opened = []
    monkeypatch.setattr(QDesktopServices, "openUrl", lambda url: opened.append(url.toLocalFile()) or True)
    assert "F1" in window.welcome.guide_link.text()
    window.welcome.guide_link.linkActivated.emit("guide")
    assert opened == [str(help_menu.user_guide_path())]
