"""GUI test harness: settings in a temporary folder, no QThread left running, windows closed after each test."""

from __future__ import annotations

import gc

import pytest
from PySide6.QtCore import QCoreApplication, QSettings, QStandardPaths, QThread

from mono_quant_gui.app import configure_plots


@pytest.fixture(autouse=True)
def _settings_in_tmp(qapp, tmp_path, monkeypatch):
    """Point QSettings and the data folder (the queue's queue.json) at tmp_path under a test-only
    organisation, so a user's settings and queue are never touched."""
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    QCoreApplication.setOrganizationName("mono-quant-tests")
    QCoreApplication.setApplicationName("mono-quant-gui-tests")
    QSettings.setDefaultFormat(QSettings.Format.IniFormat)
    QSettings.setPath(QSettings.Format.IniFormat, QSettings.Scope.UserScope, str(tmp_path / "settings"))
    configure_plots()
    yield


@pytest.fixture(autouse=True)
def _no_running_qthreads(monkeypatch):
    """Fail a test that leaves a QThread running (every QThread.start is recorded)."""
    started: list[QThread] = []
    original = QThread.start

    def start(self, *args):
        started.append(self)
        return original(self, *args)

    monkeypatch.setattr(QThread, "start", start)
    yield
    running = [t.objectName() or repr(t) for t in started if t.isRunning()]
    assert not running, f"test left QThreads running: {running}"


@pytest.fixture(scope="session", autouse=True)
def _garbage_collected_on_the_gui_thread(qapp):
    """As in the application: automatic collection off, collected on the GUI thread.

    Otherwise a worker thread may run a collection that frees a parentless Qt
    object (a QueueModel held by an exception's traceback, say) off its own
    thread, which crashes — whichever test file happens to run first.
    """
    from mono_quant_gui.app import install_garbage_collector

    install_garbage_collector()


@pytest.fixture(autouse=True)
def _collect_qt_garbage_on_the_gui_thread():
    """Collect each test's garbage here, on the GUI thread, before the next test starts."""
    yield
    gc.collect()


@pytest.fixture
def make_window(qtbot):
    """Factory for main windows; every window made is closed (its worker stopped) at the end of the test."""
    from mono_quant_gui.window.main_window import MainWindow

    made = []

    def make():
        window = MainWindow()
        window.show()
        made.append(window)
        return window

    yield make
    for window in made:
        window.confirm_quit_while_busy = False  # a test may end mid-run: no question at teardown
        window.close()
        window.deleteLater()


@pytest.fixture
def window(make_window):
    return make_window()


def wait_idle(qtbot, window, timeout=20_000):
    """Wait until the window's runner has no task running or queued."""
    qtbot.waitUntil(lambda: not window.runner.busy, timeout=timeout)


@pytest.fixture
def data_home(qapp, tmp_path, monkeypatch):
    """QStandardPaths (and so the queue file) inside tmp_path."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    QStandardPaths.setTestModeEnabled(True)
    yield tmp_path
    QStandardPaths.setTestModeEnabled(False)
