"""Hide Qt from imports (for running the core tests as if Qt were not installed)."""

from __future__ import annotations

import importlib.abc
import sys

HIDDEN = ("PySide6", "shiboken6", "pyqtgraph", "pytestqt", "mono_quant_gui")


class _HideQt(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path=None, target=None):
        if fullname.split(".")[0] in HIDDEN:
            raise ImportError(f"{fullname} is hidden: this run checks the core works without Qt")
        return None


def install() -> None:
    if not any(isinstance(f, _HideQt) for f in sys.meta_path):
        sys.meta_path.insert(0, _HideQt())


install()
