"""The few colours of the dashboard (colour-blind-safe Tableau hues) and the plot background."""

from __future__ import annotations

from PySide6.QtGui import QGuiApplication, QPalette

BAR = "#4c78a8"  # a layer's weight SQNR
LOW = "#f58518"  # below the warning threshold
INF = "#54a24b"  # identical after quantization (∞ dB)
OUTPUT = "#b279a2"  # output SQNR (per layer and the whole model)
FLOAT = "#9d9da1"  # original size
QUANTIZED = "#4c78a8"  # quantized size
FILE = "#72b7b2"  # size on disk
TEXT_ON_DARK = "#ffffff"
TOOLTIP_FILL = (40, 40, 48, 225)
ERROR = "#c0392b"
WARNING = "#b9770e"  # passed, but under a warning line
OK = "#2f8f46"


def plot_background() -> str:
    """The palette's base colour, so plots sit on the same background as lists and tables."""
    return QGuiApplication.palette().color(QPalette.ColorRole.Base).name()


def plot_foreground() -> str:
    return QGuiApplication.palette().color(QPalette.ColorRole.Text).name()
