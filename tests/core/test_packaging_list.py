"""pyproject lists every package folder by hand (resources/ is mapped into the GUI package)."""

from __future__ import annotations

import pathlib
import tomllib

ROOT = pathlib.Path(__file__).resolve().parents[2]


def test_every_package_folder_is_listed():
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {
        ".".join(p.parent.relative_to(ROOT).parts)
        for top in ("mono_quant_core", "mono_quant_gui")
        for p in (ROOT / top).rglob("__init__.py")
    }
    found.add("mono_quant_gui.resources")
    assert found == listed
