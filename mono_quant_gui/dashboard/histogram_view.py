"""The Histogram pane: one layer's weight and input distributions, its clipping range and grid.

Two step histograms side by side (pyqtgraph; items created once, then
``setData``).  The clipping range is two vertical lines with the outside
shaded; the quantization grid is short ticks under the baseline, at most
:data:`MAX_TICKS` of them (every k-th level when there are more).  The pane
shows :class:`mono_quant_core.LayerHistograms`; it computes nothing.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt
from PySide6.QtGui import QColor
from PySide6.QtWidgets import QHBoxLayout, QLabel, QSizePolicy, QSpinBox, QStackedWidget, QVBoxLayout, QWidget

from mono_quant_gui.window import colors
from mono_quant_gui.window.empty_state import EmptyState

#: Grid levels drawn at most; a finer grid shows every k-th level.
MAX_TICKS = 64
#: Tick height as a share of the tallest bin (drawn below the baseline).
_TICK = 0.07
NOTE_STYLE = "color: palette(placeholder-text);"
CAPTION_STYLE = "font-size: 9pt;"
#: A plot's counts go on a log scale when one bin holds more than this share of all values.
LOG_SHARE = 0.2


def _translucent(color: str, alpha: int) -> QColor:
    c = QColor(color)
    c.setAlpha(alpha)
    return c


def shown_ticks(grid: list[float]) -> list[float]:
    """At most MAX_TICKS of ``grid``: every k-th level from the first, and the last."""
    if len(grid) <= MAX_TICKS:
        return list(grid)
    step = math.ceil((len(grid) - 1) / (MAX_TICKS - 1))
    picked = grid[::step]
    return picked if picked[-1] == grid[-1] else [*picked, grid[-1]]


def _short(value: float) -> str:
    return f"{value:.3g}"


class HistogramPlot(pg.PlotWidget):
    """One step histogram with its clipping range (lines, shaded outside) and grid ticks."""

    def __init__(self, what: str, color: str, parent: QWidget | None = None):
        super().__init__(parent, background=colors.plot_background())
        self.setObjectName(f"{what}_histogram")
        self.what = what
        item = self.getPlotItem()
        item.setMenuEnabled(False)
        item.hideButtons()
        item.showGrid(x=False, y=True, alpha=0.2)
        item.getAxis("left").setWidth(42)
        self.view = item.getViewBox()
        self.view.setMouseEnabled(x=True, y=False)
        self.curve = pg.PlotDataItem(
            stepMode="center", fillLevel=0, brush=_translucent(color, 110), pen=pg.mkPen(color, width=1.2)
        )
        clip_pen = pg.mkPen(colors.LOW, width=1.5, style=Qt.PenStyle.DashLine)
        self.clip_lines = [pg.InfiniteLine(angle=90, movable=False, pen=clip_pen) for _ in range(2)]
        self.outside = [
            pg.LinearRegionItem(movable=False, brush=_translucent(colors.LOW, 40), pen=pg.mkPen(None)) for _ in range(2)
        ]
        self.ticks = pg.PlotDataItem(connect="pairs", pen=pg.mkPen(colors.plot_foreground(), width=1))
        #: What the plot shows, in a line (the pane puts it above the plot).
        self.caption = QLabel()
        self.caption.setObjectName(f"{what}_caption")
        self.caption.setStyleSheet(CAPTION_STYLE)
        self.caption.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Fixed)
        self.empty = pg.TextItem(anchor=(0.5, 0.5), color=colors.plot_foreground())
        for region in self.outside:
            region.setZValue(-10)
            for line in region.lines:  # a fixed region: no hover cursor, no handles
                line.setPen(pg.mkPen(None))
        for part in (*self.outside, self.curve, *self.clip_lines, self.ticks, self.empty):
            item.addItem(part, ignoreBounds=part is not self.curve)
        self.view.sigRangeChanged.connect(self._place_texts)
        self.histogram: Any = None
        #: Counts on a log scale (a spike, such as the zeros after a ReLU, would flatten the rest).
        self.log = False
        self._heights = np.zeros(0)
        self._base = 0.0
        self.clip: tuple[float, float] | None = None
        self.grid: list[float] | None = None
        self.show_empty("")

    # -- data -----------------------------------------------------------------------------------
    def show_empty(self, message: str) -> None:
        """No histogram; ``message`` in the middle of the axes."""
        self.histogram, self.clip, self.grid = None, None, None
        self.curve.setData([], [])
        self.ticks.setData([], [])
        self._show_clip(None)
        self._set_caption("")
        self.empty.setText(message)
        self.empty.setVisible(bool(message))
        self.view.setLimits(xMin=None, xMax=None, yMin=None, yMax=None)
        self.view.setRange(xRange=(0, 1), yRange=(0, 1), padding=0)
        self._place_texts()

    def set_histogram(self, histogram: Any, caption: str) -> None:
        """Draw a ``mono_quant_core.Histogram`` with its own clip and grid."""
        self.histogram = histogram
        self.empty.hide()
        counts = np.asarray(histogram.counts, dtype=float)
        total = counts.sum()
        self.log = bool(total) and counts.max() > LOG_SHARE * total
        if self.log:  # log10 of the counts, empty bins at the base (half a value)
            self._base = math.log10(0.5)
            self._heights = np.where(counts > 0, np.log10(np.maximum(counts, 1.0)), self._base)
        else:
            self._base, self._heights = 0.0, counts
        self.getPlotItem().getAxis("left").setLogMode(self.log)
        self.curve.setFillLevel(self._base)
        self.curve.setData(np.asarray(histogram.edges, dtype=float), self._heights)
        self._set_caption(caption + (" · log counts" if self.log else ""))
        self.set_range(histogram.clip, histogram.grid)

    def set_range(self, clip: tuple[float, float] | None, grid: list[float] | None) -> None:
        """Mark ``clip`` and ``grid`` (one channel's, say) over the histogram on screen."""
        self.clip, self.grid = clip, grid
        h = self.histogram
        if h is None:
            return
        span = max(float(self._heights.max(initial=self._base)) - self._base, 1.0)
        base = self._base
        lo, hi = h.edges[0], h.edges[-1]
        if clip is not None:
            lo, hi = min(lo, clip[0]), max(hi, clip[1])
        pad = (hi - lo) * 0.04 or 0.5
        x0, x1 = lo - pad, hi + pad
        y0, y1 = base - span * _TICK * 1.6, base + span * 1.1
        self.view.setLimits(xMin=x0, xMax=x1, yMin=y0, yMax=y1)
        self.view.setRange(xRange=(x0, x1), yRange=(y0, y1), padding=0)
        self._show_clip(clip, x0, x1)
        shown = shown_ticks(grid) if grid else []
        xs = np.repeat(np.asarray(shown, dtype=float), 2)
        ys = np.tile([base - span * _TICK, base], len(shown))
        self.ticks.setData(xs, ys)
        self._place_texts()

    def _show_clip(self, clip: tuple[float, float] | None, x0: float = 0.0, x1: float = 0.0) -> None:
        for part in (*self.clip_lines, *self.outside):
            part.setVisible(clip is not None)
        if clip is None:
            return
        for line, value in zip(self.clip_lines, clip, strict=True):
            line.setValue(value)
        self.outside[0].setRegion((x0, clip[0]))
        self.outside[1].setRegion((clip[1], x1))

    def _set_caption(self, text: str) -> None:
        self.caption.setText(text)
        self.caption.setToolTip(text)

    def _place_texts(self, *_: Any) -> None:
        (x0, x1), (y0, y1) = self.view.viewRange()
        self.empty.setPos((x0 + x1) / 2, (y0 + y1) / 2)

    # -- what tests and tooltips read ------------------------------------------------------------
    def counts_total(self) -> int:
        return 0 if self.histogram is None else sum(self.histogram.counts)

    def tick_count(self) -> int:
        x, _ = self.ticks.getData()
        return 0 if x is None else len(x) // 2


class HistogramView(QWidget):
    """The Histogram pane: a title line, a note, and the weights and inputs of the selected layer."""

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.setObjectName("histogram_view")
        self.hint = EmptyState()
        self.title = QLabel()
        self.title.setObjectName("histogram_title")
        self.title.setStyleSheet("font-weight: 600;")
        self.title.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.note = QLabel()
        self.note.setObjectName("histogram_note")
        self.note.setStyleSheet(NOTE_STYLE)
        self.note.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        self.channel = QSpinBox()
        self.channel.setObjectName("histogram_channel")
        self.channel.setToolTip("Mark one channel's (or group's) range and grid instead of the union of them all")
        self.channel.setMinimum(-1)
        self.channel.setSpecialValueText("all channels")
        self.channel.valueChanged.connect(self._channel_changed)
        self.weights = HistogramPlot("weights", colors.BAR)
        self.activations = HistogramPlot("activations", colors.OUTPUT)
        header = QHBoxLayout()
        header.setContentsMargins(0, 0, 0, 0)
        header.addWidget(self.title)
        header.addSpacing(12)
        header.addWidget(self.note, 1)
        header.addWidget(self.channel)
        plots = QHBoxLayout()
        plots.setContentsMargins(0, 0, 0, 0)
        for plot in (self.weights, self.activations):
            column = QVBoxLayout()
            column.setSpacing(0)
            column.addWidget(plot.caption)
            column.addWidget(plot, 1)
            plots.addLayout(column, 1)
        page = QWidget()
        layout = QVBoxLayout(page)
        layout.setContentsMargins(4, 2, 4, 2)
        layout.setSpacing(2)
        layout.addLayout(header)
        layout.addLayout(plots, 1)
        self.page = page
        self.stack = QStackedWidget()
        self.stack.addWidget(self.hint)
        self.stack.addWidget(page)
        outer = QVBoxLayout(self)
        outer.setContentsMargins(0, 0, 0, 0)
        outer.addWidget(self.stack)
        self.shown: Any = None
        self.show_hint("No layer selected", "Select a layer in the module tree to see its weight distribution.")

    @property
    def layer(self) -> str | None:
        """The layer whose histograms are on screen (None: a hint is)."""
        return None if self.shown is None else self.shown.name

    def show_hint(self, title: str, text: str) -> None:
        self.shown = None
        self.hint.set_content(title, text, [])
        self.stack.setCurrentWidget(self.hint)

    def show_busy(self, name: str, why: str) -> None:
        """``name`` is being (or will be) computed: its title, ``why`` as the note, the last plots dimmed."""
        self.stack.setCurrentWidget(self.page)
        self.title.setText(name)
        self._set_note(why)

    def show_layer(self, h: Any, note: str = "", no_inputs: str = "no activations") -> None:
        """Show a ``mono_quant_core.LayerHistograms``; ``note``: what the window adds (no run yet);
        ``no_inputs``: what the inputs plot says when there are no activations."""
        self.shown = h
        self.stack.setCurrentWidget(self.page)
        kind = " ".join(p for p in (h.dtype, h.scheme, h.granularity) if p)
        self.title.setText(" · ".join(p for p in (h.name, h.type, kind, h.mode or "") if p))
        self._set_note("; ".join(p for p in (note, h.note) if p))
        w = h.weights
        self.weights.set_histogram(w, self._caption("weights", w))
        if h.activations is None:
            self.activations.show_empty(no_inputs)
        else:
            self.activations.set_histogram(h.activations, self._caption("inputs", h.activations))
        ranges = w.channel_ranges or []
        self.channel.blockSignals(True)
        self.channel.setMaximum(max(len(ranges) - 1, -1))
        self.channel.setValue(-1)
        self.channel.setSpecialValueText(
            f"all {len(ranges)} {'groups' if h.granularity == 'per-group' else 'channels'}"
        )
        self.channel.setPrefix("group " if h.granularity == "per-group" else "channel ")
        self.channel.blockSignals(False)
        self.channel.setVisible(bool(ranges))

    def _set_note(self, text: str) -> None:
        self.note.setText(text)
        self.note.setToolTip(text)

    def _caption(self, what: str, histogram: Any) -> str:
        """``weights · 4,608 values · int8 range [-0.38, 0.38] · 255 levels``."""
        parts = [what, f"{sum(histogram.counts):,} values"]
        if histogram.clip is not None:
            lo, hi = histogram.clip
            parts.append(f"{histogram.clip_label or 'range'} [{_short(lo)}, {_short(hi)}]")
        elif histogram.clip_label:
            parts.append(histogram.clip_label)
        if histogram.grid:
            parts.append(f"{len(histogram.grid)} levels")
        return " · ".join(parts)

    def _channel_changed(self, value: int) -> None:
        h = self.shown
        if h is None or not h.weights.channel_ranges:
            return
        w = h.weights
        if value < 0:
            self.weights.set_range(w.clip, w.grid)
            return
        lo, hi = w.channel_ranges[value]
        # Every channel's grid has as many levels as the widest one's, spread over its own range.
        grid = np.linspace(lo, hi, len(w.grid)).tolist() if w.grid else None
        self.weights.set_range((lo, hi), grid)
