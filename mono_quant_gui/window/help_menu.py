"""Help: the versions the About box lists and the bundled user guide (resources/docs).

Versions come from the installed distributions' metadata, so showing them
never imports torch (which costs over a second; DESIGN.md §6).
"""

from __future__ import annotations

import importlib.metadata
import importlib.resources
import os
import shutil
import tempfile
from pathlib import Path

from mono_quant_gui import identity

#: The user guide inside the package: ``mono_quant_gui.resources/docs/user-guide.html``
#: (written by tools/build_user_guide.py from docs/user-guide.md).
GUIDE_FOLDER = "docs"
GUIDE_FILE = "user-guide.html"
UNKNOWN = "not installed"

_extracted: Path | None = None


def distribution_version(*names: str) -> str:
    """The version of the first of ``names`` that is installed (metadata only, no import)."""
    for name in names:
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return UNKNOWN


def versions() -> dict[str, str]:
    """``{"mono-quant": …, "torch": …, "PySide6": …, "Qt": …, "safetensors": …}``.

    PySide6 ships as ``PySide6`` or, in smaller installs, ``PySide6-Essentials``;
    ``Qt`` is the Qt library the process runs on (``qVersion()``).
    """
    import PySide6
    from PySide6.QtCore import qVersion

    pyside = distribution_version("PySide6", "PySide6-Essentials")
    return {
        "mono-quant": identity.VERSION,
        "torch": distribution_version("torch"),
        "PySide6": PySide6.__version__ if pyside == UNKNOWN else pyside,
        "Qt": qVersion(),
        "safetensors": distribution_version("safetensors"),
    }


def about_html() -> str:
    """The About box's text: name, version, summary, the versions it runs on, licence."""
    rows = "".join(
        f"<tr><td>{name}</td><td>&nbsp;&nbsp;{version}</td></tr>"
        for name, version in versions().items()
        if name != "mono-quant"
    )
    return (
        f"<h3>{identity.DISPLAY_NAME} {identity.VERSION}</h3>"
        f"<p>{identity.SUMMARY}</p>"
        f"<table>{rows}</table>"
        f"<p>Licence: {identity.LICENSE}<br>"
        f"<a href='{identity.HOMEPAGE}'>{identity.HOMEPAGE}</a></p>"
    )


def user_guide_path() -> Path:
    """A file on disk holding the user guide (its images next to it); FileNotFoundError when missing.

    The package's resources are plain files in every install we ship; should
    they sit inside a zip, the guide's folder is copied to a temporary folder
    once per process, so a browser can open it.
    """
    global _extracted
    folder = importlib.resources.files("mono_quant_gui.resources") / GUIDE_FOLDER
    on_disk = Path(str(folder))
    if (on_disk / GUIDE_FILE).is_file():
        return on_disk / GUIDE_FILE
    if not (folder / GUIDE_FILE).is_file():
        raise FileNotFoundError(f"the user guide ({GUIDE_FOLDER}/{GUIDE_FILE}) is missing from this installation")
    if _extracted is None or not (_extracted / GUIDE_FILE).is_file():
        target = Path(tempfile.mkdtemp(prefix="mono-quant-guide-"))
        _copy_tree(folder, target)
        _extracted = target
    return _extracted / GUIDE_FILE


def _copy_tree(source, target: Path) -> None:
    """Copy a Traversable folder (possibly inside a zip) to ``target``."""
    os.makedirs(target, exist_ok=True)
    for item in source.iterdir():
        if item.is_dir():
            _copy_tree(item, target / item.name)
        else:
            with item.open("rb") as src, open(target / item.name, "wb") as dst:
                shutil.copyfileobj(src, dst)
