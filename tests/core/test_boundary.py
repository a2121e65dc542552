"""The engine never sees Qt: importing every core module pulls in no Qt and no GUI code."""

from __future__ import annotations

import pkgutil
import subprocess
import sys

import mono_quant_core

FORBIDDEN = ("PySide6", "shiboken6", "pyqtgraph", "mono_quant_gui")


def core_modules() -> list[str]:
    return sorted(
        m.name
        for m in pkgutil.walk_packages(mono_quant_core.__path__, "mono_quant_core.")
        if not m.name.endswith("__main__")
    )


def test_core_imports_no_qt():
    code = (
        "import importlib, sys\n"
        f"for name in {core_modules()!r}: importlib.import_module(name)\n"
        "import mono_quant_core as m\n"
        "[getattr(m, n) for n in m.__all__]\n"
        f"bad = [n for n in sys.modules if n.split('.')[0] in {FORBIDDEN!r}]\n"
        "assert not bad, bad\n"
        "print('ok', len(sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("ok")


def test_light_modules_do_not_import_torch():
    code = (
        "import sys, mono_quant_core, mono_quant_core.config, mono_quant_core.report, "
        "mono_quant_core.progress, mono_quant_core.errors\n"
        "assert 'torch' not in sys.modules\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


def test_core_suite_runs_with_qt_hidden():
    """The conftest hides Qt when MONO_QUANT_HIDE_QT is set; .ci/run runs tests/core that way.

    Here we check the hiding itself works, so that run really has no Qt."""
    code = "import PySide6"
    env = {"MONO_QUANT_HIDE_QT": "1"}
    import os

    out = subprocess.run(
        [sys.executable, "-c", "import tests_qt_hider; " + code],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **env, "PYTHONPATH": os.path.join(os.path.dirname(__file__), "..")},
    )
    assert out.returncode != 0 and "hidden" in out.stderr
