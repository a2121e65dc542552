"""PyInstaller hook: the GUI's resources (icons, demo, desktop files) and the metadata Help -> About reads."""

from __future__ import annotations

from PyInstaller.utils.hooks import collect_data_files, collect_submodules, copy_metadata

# include_py_files: the demo model script under resources/demo is data that the app loads by path.
datas = collect_data_files("mono_quant_gui.resources", include_py_files=True)
for distribution in ("mono-quant", "torch", "safetensors", "PySide6-Essentials", "pyqtgraph", "numpy"):
    datas += copy_metadata(distribution)

hiddenimports = collect_submodules("mono_quant_gui")
