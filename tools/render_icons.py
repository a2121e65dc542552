"""Render resources/app/icon.svg to the PNG sizes listed in identity.ICON_SIZES.

Run after editing the SVG:  python tools/render_icons.py
"""

from __future__ import annotations

import os
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
APP_DIR = ROOT / "resources" / "app"


def render(svg: pathlib.Path, size: int, out: pathlib.Path) -> None:
    """Render ``svg`` to a square ``size`` px PNG with a transparent background."""
    from PySide6.QtCore import QRectF
    from PySide6.QtGui import QImage, QPainter, Qt
    from PySide6.QtSvg import QSvgRenderer

    renderer = QSvgRenderer(str(svg))
    if not renderer.isValid():
        raise SystemExit(f"{svg}: not a valid SVG")
    image = QImage(size, size, QImage.Format.Format_ARGB32_Premultiplied)
    image.fill(Qt.GlobalColor.transparent)
    painter = QPainter(image)
    painter.setRenderHint(QPainter.RenderHint.Antialiasing)
    painter.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform)
    renderer.render(painter, QRectF(0, 0, size, size))
    painter.end()
    # PNG stores straight alpha; convert so the file is what the renderer drew.
    if not image.convertToFormat(QImage.Format.Format_ARGB32).save(str(out), "PNG"):
        raise SystemExit(f"{out}: could not write the PNG")


def main() -> int:
    """Write icon-<size>.png next to icon.svg for every size the application ships."""
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    sys.path.insert(0, str(ROOT))
    from PySide6.QtGui import QGuiApplication

    from mono_quant_gui.identity import ICON_SIZES

    app = QGuiApplication.instance() or QGuiApplication([])  # noqa: F841  (QPainter wants one)
    svg = APP_DIR / "icon.svg"
    for size in ICON_SIZES:
        out = APP_DIR / f"icon-{size}.png"
        render(svg, size, out)
        print(f"wrote {out.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
