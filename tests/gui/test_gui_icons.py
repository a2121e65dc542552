"""The application icon loads through Qt from the package resources, at every rendered size."""

from __future__ import annotations

import importlib.util
import pathlib

import numpy as np
import pytest
from PySide6.QtCore import QSize
from PySide6.QtGui import QImage
from PySide6.QtSvg import QSvgRenderer

from mono_quant_core.errors import MonoQuantError
from mono_quant_gui import identity

ROOT = pathlib.Path(__file__).resolve().parents[2]


def _pixels(path: pathlib.Path) -> np.ndarray:
    image = QImage(str(path)).convertToFormat(QImage.Format.Format_RGBA8888)
    return (
        np.frombuffer(image.constBits(), np.uint8)
        .reshape(image.height(), image.bytesPerLine())[:, : 4 * image.width()]
        .astype(np.int16)
    )


def test_app_icon_has_every_size(qapp):
    icon = identity.app_icon()
    assert not icon.isNull()
    assert sorted(s.width() for s in icon.availableSizes()) == list(identity.ICON_SIZES)
    assert all(s.width() == s.height() for s in icon.availableSizes())
    assert icon.pixmap(QSize(48, 48)).size() == QSize(48, 48)


def test_icon_path_points_into_the_package_resources(qapp):
    svg = identity.icon_path()
    assert svg.name == "icon.svg" and svg.is_file()
    assert QSvgRenderer(str(svg)).isValid()
    for size in identity.ICON_SIZES:
        image = QImage(str(identity.icon_path(size)))
        assert (image.width(), image.height()) == (size, size)
        assert image.hasAlphaChannel()


def test_icon_path_refuses_a_size_that_is_not_rendered():
    with pytest.raises(MonoQuantError, match=r"icon_path: size 20 is not rendered"):
        identity.icon_path(20)


def test_pngs_are_renders_of_the_current_svg(qapp, tmp_path):
    """Fails when icon.svg changed and tools/render_icons.py was not run.

    Threshold: under 1% of the pixels may differ by more than 24 (of 255) in a channel; that
    allows another Qt's anti-aliasing of edges, while recolouring a single cell moves ~5%.
    """
    spec = importlib.util.spec_from_file_location("_render_icons", ROOT / "tools" / "render_icons.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    for size in identity.ICON_SIZES:
        fresh = tmp_path / f"{size}.png"
        tool.render(identity.icon_path(), size, fresh)
        diff = np.abs(_pixels(fresh) - _pixels(identity.icon_path(size))).reshape(size, size, 4)
        changed = (diff.max(axis=2) > 24).mean()
        assert changed < 0.01, (
            f"icon-{size}.png differs from icon.svg ({changed:.1%} of pixels): run tools/render_icons.py"
        )
