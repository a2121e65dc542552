"""PyInstaller hook: the engine's lazily imported rooms, and the standard library for users' model scripts."""

from __future__ import annotations

import pathlib
import sys

from PyInstaller.utils.hooks import collect_submodules, copy_metadata

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
from bundle_rules import stdlib_hiddenimports

# mono_quant_core/__init__.py imports its rooms by name on first use (PEP 562), which
# static analysis cannot see.
hiddenimports = collect_submodules("mono_quant_core")

# The frozen app imports the user's model script, which may import any standard-library
# module; carry them all except the GUI toolkits, test suites and installers.
hiddenimports += stdlib_hiddenimports()

datas = copy_metadata("mono-quant")
