"""The one application identity: ids, names and icons used by the app, the desktop files and the build.

Importable without Qt: ``app_icon()`` imports QtGui only when it is called.
"""

from __future__ import annotations

import importlib.metadata
import importlib.resources
import pathlib
import typing

if typing.TYPE_CHECKING:
    from PySide6.QtGui import QIcon

from mono_quant_core.errors import MonoQuantError

#: Reverse-DNS application id: QGuiApplication.desktopFileName, the .desktop and metainfo
#: file names, the icon-theme name and the Wayland app id.
APP_ID = "io.github.monoquant.MonoQuant"
#: QCoreApplication.applicationName; also the name of the frozen folder and the distribution.
APP_NAME = "mono-quant"
#: What people read: window titles, the desktop menu, the software centre.
DISPLAY_NAME = "mono-quant"
#: QCoreApplication.organizationName / organizationDomain (QSettings: ~/.config/mono-quant/mono-quant.conf).
ORG_NAME = "mono-quant"
ORG_DOMAIN = "monoquant.github.io"
SUMMARY = "Post-training quantization of PyTorch models"
HOMEPAGE = "https://github.com/monoquant/mono-quant"
LICENSE = "MIT"
#: The GUI script ([project.gui-scripts]) and the frozen executable.
EXECUTABLE = "mono-quant-gui"
DESKTOP_FILE = f"{APP_ID}.desktop"
METAINFO_FILE = f"{APP_ID}.metainfo.xml"
#: PNG renders of app/icon.svg kept in resources/app/ (tools/render_icons.py).
ICON_SIZES = (16, 32, 48, 64, 128, 256, 512)

_DISTRIBUTION = "mono-quant"
_FALLBACK_VERSION = "0.0.0+unknown"


class IdentityError(MonoQuantError, ValueError):
    """An icon was asked for at a size that is not rendered."""


def _installed_version() -> str:
    try:
        return importlib.metadata.version(_DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        return _FALLBACK_VERSION


#: The installed distribution's version (from its metadata), or ``0.0.0+unknown`` without it.
VERSION = _installed_version()


def icon_path(size: int | None = None) -> pathlib.Path:
    """Path of the application icon: the SVG when ``size`` is None, else the PNG of that size."""
    if size is not None and size not in ICON_SIZES:
        raise IdentityError(f"icon_path: size {size!r} is not rendered; sizes are {ICON_SIZES}")
    name = "icon.svg" if size is None else f"icon-{size}.png"
    folder = importlib.resources.files("mono_quant_gui.resources") / "app"
    # The resources are plain files on disk in every install mode we ship (wheel,
    # editable, PyInstaller one-folder), so the Traversable is a real path.
    return pathlib.Path(str(folder / name))


def app_icon() -> QIcon:
    """A QIcon holding every rendered PNG size (for window icons, the About box, the taskbar)."""
    from PySide6.QtGui import QIcon

    # PNGs only: mixing in the SVG would need Qt's SVG icon-engine plugin at run time.
    icon = QIcon()
    for size in ICON_SIZES:
        icon.addFile(str(icon_path(size)))
    return icon
