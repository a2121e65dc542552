"""``mono-quant-gui --smoke-test`` as installed: exit 0 and one summary line; errors and the timeout exit 1."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys

from mono_quant_gui.smoke import use_offscreen_without_display


def environment(tmp_path) -> dict[str, str]:
    """No display (the smoke test must choose offscreen itself) and no user folders."""
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY", "QT_QPA_PLATFORM")}
    env.update(HOME=str(tmp_path), XDG_CONFIG_HOME=str(tmp_path / "config"), XDG_DATA_HOME=str(tmp_path / "data"))
    return env


def test_the_installed_command_passes_its_smoke_test(tmp_path):
    command = shutil.which("mono-quant-gui", path=os.path.dirname(sys.executable))
    assert command is not None, "the mono-quant-gui script is not installed next to this Python"
    done = subprocess.run(
        [command, "--smoke-test"], env=environment(tmp_path), capture_output=True, text=True, timeout=180
    )
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert len(lines) == 1, done.stdout
    assert re.fullmatch(
        r"smoke test ok: 15 modules, demo loaded in \d+\.\d s, quantized in \d+\.\d s "
        r"\(output SQNR \d+\.\d dB\), user guide user-guide\.html, torch \S+, Qt \S+",
        lines[0],
    ), lines
    assert "propagateSizeHints" not in done.stderr
    assert not (tmp_path / "config").exists() and not (tmp_path / "data").exists()  # the user's folders untouched


DRIVER = r"""
import sys
from pathlib import Path

import mono_quant_gui.demo as demos
import mono_quant_gui.window.opening as opening
import mono_quant_gui.smoke as smoke
from mono_quant_gui.__main__ import main

if sys.argv[1] == "broken":
    real = demos.demo
    opening.demo = lambda key="cnn": demos.Demo(key, "broken", Path(sys.argv[2]), real(key).checkpoint,
                                                real(key).calibration)
else:
    smoke.TIMEOUT_S = 0.2
sys.exit(main(["--smoke-test"]))
"""


def test_a_failing_smoke_test_says_why_and_exits_1(tmp_path):
    broken = tmp_path / "model.py"
    broken.write_text("raise RuntimeError('this model script is broken')\n")
    done = subprocess.run(
        [sys.executable, "-c", DRIVER, "broken", str(broken)],
        env=environment(tmp_path),
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 1, done.stdout + done.stderr
    assert done.stdout == ""
    assert "smoke test failed: " in done.stderr and "this model script is broken" in done.stderr


def test_a_smoke_test_that_hangs_is_stopped(tmp_path):
    done = subprocess.run(
        [sys.executable, "-c", DRIVER, "timeout"],
        env=environment(tmp_path),
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 1, done.stdout + done.stderr
    assert "smoke test failed: timed out after 0.2 s" in done.stderr


def test_offscreen_only_without_a_display():
    env: dict[str, str] = {}
    assert use_offscreen_without_display(env) == sys.platform.startswith("linux")
    if sys.platform.startswith("linux"):
        assert env == {"QT_QPA_PLATFORM": "offscreen"}
    for given in ({"DISPLAY": ":0"}, {"WAYLAND_DISPLAY": "wayland-0"}, {"QT_QPA_PLATFORM": "xcb"}):
        env = dict(given)
        assert not use_offscreen_without_display(env) and env == given
