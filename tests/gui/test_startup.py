"""Entry points: mono-quant-gui's main() in a subprocess shows the window before torch loads, then opens the demo."""

from __future__ import annotations

import os
import subprocess
import sys

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
