"""PyInstaller hook: the engine's lazily imported rooms, and the standard library for users' model scripts."""

from __future__ import annotations

import importlib.util
import sys

from PyInstaller.utils.hooks import collect_submodules, copy_metadata

# mono_quant_core/__init__.py imports its rooms by name on first use (PEP 562), which
# static analysis cannot see.
hiddenimports = collect_submodules("mono_quant_core")

# The frozen app imports the user's model script, which may import any standard-library
# module; carry them all except the GUI toolkits, test suites and installers.
_LEFT_OUT = {"tkinter", "turtle", "turtledemo", "idlelib", "test", "ensurepip", "lib2to3", "pydoc_data", "venv"}
hiddenimports += [
    name
    for name in sorted(sys.stdlib_module_names)
    if not name.startswith("_") and name not in _LEFT_OUT and importlib.util.find_spec(name) is not None
]

datas = copy_metadata("mono-quant")
