"""Entry points: mono-quant-gui's main() in a subprocess shows the window before torch loads, then opens the demo."""

from __future__ import annotations

import os
import subprocess
import sys

from mono_quant_gui import platform_check
from mono_quant_gui.__main__ import parse_args

DRIVER = r"""
import sys
from PySide6.QtWidgets import QApplication
import mono_quant_gui.__main__ as entry

original = entry.apply_args

def apply_args(window, args):
    print("torch imported before the window was shown:", "torch" in sys.modules, flush=True)
    original(window, args)
    def idle(busy):
        if not busy:
            print("modules:", window.modules.model.rowCount() and len(window.modules.model.rows), flush=True)
            print("calibration rows:", window.calibration_panel.table.rowCount(), flush=True)
            window.close()
            QApplication.instance().quit()
    window.runner.busy_changed.connect(idle)

entry.apply_args = apply_args
sys.exit(entry.main(sys.argv[1:]))
"""


def test_main_shows_the_window_before_torch_and_opens_the_demo(tmp_path):
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen", XDG_CONFIG_HOME=str(tmp_path))
    done = subprocess.run(
        [sys.executable, "-c", DRIVER, "--demo"], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert "torch imported before the window was shown: False" in done.stdout
    assert "modules: 15" in done.stdout
    assert "calibration rows: 40" in done.stdout


def test_command_line_arguments():
    args = parse_args(["--demo", "transformer", "--script", "m.py", "--checkpoint", "c.pt", "--calib", "d", "job.toml"])
    assert (args.demo, args.script, args.checkpoint, args.calib, args.paths) == (
        "transformer",
        "m.py",
        "c.pt",
        "d",
        ["job.toml"],
    )
    assert parse_args(["--demo"]).demo == "cnn"
    assert parse_args([]).demo is None


def without_display(tmp_path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY", "QT_QPA_PLATFORM")}
    return dict(env, XDG_CONFIG_HOME=str(tmp_path))


def test_without_a_display_main_says_what_is_missing_and_exits_2(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "mono_quant_gui"],
        env=without_display(tmp_path),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == platform_check.EXIT_NO_PLATFORM == 2
    assert done.stderr.startswith("mono-quant-gui: cannot open a window: there is no display")
    assert "sudo apt-get install " + " ".join(platform_check.ALL_PACKAGES) in done.stderr
    assert "QT_QPA_PLATFORM=offscreen" in done.stderr
    assert "qt.qpa.plugin" not in done.stderr  # said before Qt tried its plugins
    assert done.stdout == ""


def test_missing_xcb_libraries_are_named_with_their_packages():
    missing = {"libxcb-cursor.so.0", "libdbus-1.so.3"}
    problem = platform_check.platform_problem({"DISPLAY": ":0"}, "linux", load=lambda s: s not in missing)
    assert problem is not None
    first, install = problem.splitlines()[:3:2]
    assert first == (
        "mono-quant-gui: cannot open a window: Qt's X11 (xcb) platform needs system libraries that are missing: "
        "libxcb-cursor.so.0, libdbus-1.so.3."
    )
    assert install == "    sudo apt-get install libxcb-cursor0 libdbus-1-3"
    assert "QT_QPA_PLATFORM=offscreen" in problem


def test_a_working_or_chosen_platform_is_left_to_qt():
    def nothing_loads(soname: str) -> bool:
        return False

    check = platform_check.platform_problem
    assert check({"DISPLAY": ":0"}, "linux", load=lambda s: True) is None
    assert check({"QT_QPA_PLATFORM": "offscreen"}, "linux", load=nothing_loads) is None
    assert check({}, "darwin", load=nothing_loads) is None
    assert check({}, "win32", load=nothing_loads) is None
    # A Wayland session does not need xcb's libraries, only the common ones.
    assert check({"WAYLAND_DISPLAY": "wayland-0", "DISPLAY": ":0"}, "linux", load=lambda s: "xcb" not in s) is None
    wayland = check({"WAYLAND_DISPLAY": "wayland-0"}, "linux", load=lambda s: s != "libEGL.so.1")
    assert wayland is not None and "display platform needs system libraries that are missing: libEGL.so.1." in wayland
    # xcb chosen by name: its libraries are checked even in a Wayland session.
    xcb = check({"QT_QPA_PLATFORM": "xcb", "WAYLAND_DISPLAY": "w"}, "linux", load=lambda s: s != "libxcb-icccm.so.4")
    assert xcb is not None and "sudo apt-get install libxcb-icccm4\n" in xcb
