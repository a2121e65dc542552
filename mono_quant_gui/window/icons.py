"""Toolbar and button icons: the SVGs in resources/icons, tinted and rendered to pixmaps.

Rendering with QSvgRenderer (instead of handing the SVG path to QIcon) works
without Qt's SVG icon-engine plugin, which frozen builds may leave out.
"""

from __future__ import annotations

import importlib.resources
from functools import cache

from PySide6.QtCore import QByteArray, QRectF, Qt
from PySide6.QtGui import QGuiApplication, QIcon, QPainter, QPalette, QPixmap
from PySide6.QtSvg import QSvgRenderer

_SIZES = (16, 20, 24, 32, 48)


@cache
def svg_text(name: str) -> str:
    """The SVG source of ``resources/icons/<name>.svg``."""
    return (importlib.resources.files("mono_quant_gui.resources") / "icons" / f"{name}.svg").read_text("utf-8")


def _render(svg: str, size: int, ratio: float) -> QPixmap:
    pixels = max(1, round(size * ratio))
    pixmap = QPixmap(pixels, pixels)
    pixmap.fill(Qt.GlobalColor.transparent)
    painter = QPainter(pixmap)
    QSvgRenderer(QByteArray(svg.encode("utf-8"))).render(painter, QRectF(0, 0, pixels, pixels))
    painter.end()
    pixmap.setDevicePixelRatio(ratio)
    return pixmap


def icon(name: str, color: str | None = None) -> QIcon:
    """An icon from its SVG, drawn in ``color`` (default: the palette's text colour; greyed when disabled)."""
    palette = QGuiApplication.palette()
    normal = color or palette.color(QPalette.ColorRole.WindowText).name()
    disabled = palette.color(QPalette.ColorGroup.Disabled, QPalette.ColorRole.WindowText).name()
    source = svg_text(name)
    ratio = QGuiApplication.primaryScreen().devicePixelRatio() if QGuiApplication.primaryScreen() else 1.0
    result = QIcon()
    for size in _SIZES:
        result.addPixmap(_render(source.replace("currentColor", normal), size, ratio), QIcon.Mode.Normal)
        result.addPixmap(_render(source.replace("currentColor", disabled), size, ratio), QIcon.Mode.Disabled)
    return result
