"""packaging/bundle_rules.py: what the frozen app carries and leaves out, checked without building it."""

from __future__ import annotations

import importlib.util
import json
import os
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _rules():
    spec = importlib.util.spec_from_file_location("bundle_rules", ROOT / "packaging" / "bundle_rules.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


rules = _rules()


@pytest.mark.parametrize(
    "dest",
    [
        "torch/bin/torch_shm_manager",  # `import torch` fails without it
        "torch/lib/libtorch_cpu.so",
        "torch/lib/libc10.so",
        "torch/testing/_internal/logging_tensor.py",
        "PySide6/Qt/lib/libQt6Widgets.so.6",
        "PySide6/Qt/plugins/platforms/libqoffscreen.so",
        "mono_quant_gui/resources/demo/cnn/model.py",
        "mono_quant-0.1.0.dist-info/METADATA",
    ],
)
def test_needed_files_are_kept(dest):
    assert rules.needed(dest)


@pytest.mark.parametrize(
    "dest",
    [
        "torch/bin/test_api",
        "torch/bin/protoc",
        "torch/test/atest",
        "torch/lib/libtorchbind_test.so",
        "torch/lib/libjitbackend_test.so",
        "PySide6/Qt/translations/qtbase_de.qm",
        "torch\\test\\atest",  # a Windows destination
    ],
)
def test_test_programs_and_translations_are_left_out(dest):
    assert not rules.needed(dest)


def test_keep_filters_a_toc():
    toc = [
        ("torch/bin/torch_shm_manager", "/x/a", "BINARY"),
        ("torch/bin/test_jit", "/x/b", "BINARY"),
        ("mono_quant_gui/resources/app/icon.svg", "/x/c", "DATA"),
    ]
    kept = [entry[0] for entry in rules.keep(toc)]
    assert kept == ["torch/bin/torch_shm_manager", "mono_quant_gui/resources/app/icon.svg"]


def test_stdlib_hiddenimports_carry_the_standard_library_less_toolkits_and_tests():
    names = rules.stdlib_hiddenimports()
    assert {"json", "sqlite3", "dataclasses", "unittest", "multiprocessing"} <= set(names)
    assert not set(names) & rules.STDLIB_LEFT_OUT
    assert not [name for name in names if name.startswith("_")]
    assert names == sorted(names)


def test_qt_modules_left_out_are_excluded():
    assert "PySide6.QtNetwork" in rules.EXCLUDES
    assert not {"PySide6.QtCore", "PySide6.QtGui", "PySide6.QtWidgets", "PySide6.QtSvg"} & set(rules.EXCLUDES)


def _fake_strip(tmp_path):
    calls = tmp_path / "calls"
    strip = tmp_path / "strip"
    strip.write_text(
        f'#!/bin/sh\n# strip --strip-unneeded -o OUT IN\necho "$4" >> "{calls}"\ncp "$4" "$3"\n'
        'printf stripped >> "$3"\n'
    )
    strip.chmod(0o755)
    return str(strip), calls


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="only Linux builds strip")
def test_strip_binaries_swaps_torch_libraries_for_stripped_copies_made_once(tmp_path):
    lib = tmp_path / "site" / "libtorch_cpu.so"
    lib.parent.mkdir()
    lib.write_bytes(b"ELF")
    other = tmp_path / "site" / "libQt6Core.so.6"
    other.write_bytes(b"ELF")
    toc = [
        ("torch/lib/libtorch_cpu.so", str(lib), "BINARY"),
        ("PySide6/Qt/lib/libQt6Core.so.6", str(other), "BINARY"),
        ("torch/lib/readme.txt", str(lib), "DATA"),
    ]
    strip, calls = _fake_strip(tmp_path)

    out = rules.strip_binaries(toc, tmp_path / "work", strip=strip)
    copy = tmp_path / "work" / "stripped" / "torch" / "lib" / "libtorch_cpu.so"
    assert out == [("torch/lib/libtorch_cpu.so", str(copy), "BINARY"), toc[1], toc[2]]
    assert copy.read_bytes() == b"ELFstripped"
    # A second build reuses the copy; a newer source is stripped again.
    assert rules.strip_binaries(toc, tmp_path / "work", strip=strip) == out
    assert calls.read_text().splitlines() == [str(lib)]
    os.utime(lib, (copy.stat().st_mtime + 10, copy.stat().st_mtime + 10))
    rules.strip_binaries(toc, tmp_path / "work", strip=strip)
    assert calls.read_text().splitlines() == [str(lib), str(lib)]


def test_strip_binaries_without_a_strip_program_keeps_the_toc(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(rules.shutil, "which", lambda name: None)
    toc = [("torch/lib/libtorch_cpu.so", "/nowhere/libtorch_cpu.so", "BINARY")]
    assert rules.strip_binaries(toc, tmp_path) == toc
    assert "not stripping" in capsys.readouterr().err


_PROBE = """
import json, sys
import pyqtgraph
import mono_quant_gui.window.main_window
from mono_quant_core import QuantConfig, load_calibration, load_model, quantize
from mono_quant_gui.demo import demo
for key, mode in (("cnn", "static"), ("transformer", "dynamic")):
    d = demo(key)
    model = load_model(d.script, d.checkpoint)
    quantize(model, QuantConfig(mode=mode), calibration=load_calibration(d.calibration, samples=2))
print(json.dumps(sorted(sys.modules)))
"""


@pytest.mark.slow
def test_nothing_the_app_imports_is_excluded():
    """Loading and quantizing the demos (as the frozen app's smoke test does) imports no excluded module."""
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen"}
    done = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True, timeout=240, env=env)
    assert done.returncode == 0, done.stderr
    imported = json.loads(done.stdout.splitlines()[-1])
    excluded = [name for name in imported if any(name == ex or name.startswith(ex + ".") for ex in rules.EXCLUDES)]
    assert excluded == []
    assert "torch.testing._internal" in imported  # why it is not excluded (see bundle_rules.EXCLUDES)
