"""Per-layer output SQNR change from run A to run B as bars around zero (pyqtgraph; items made once).

Green bars: B is better there; red: worse.  An infinite change (identical outputs in one run
only) is drawn to a cap beyond the largest finite one; a layer measured in one run only has no
bar.  Hovering shows the layer's name and both values.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QPointF

from mono_quant_core.report import format_db
from mono_quant_gui.runs.run_text import db_delta_text
from mono_quant_gui.window import colors

_BAR_WIDTH = 0.72
#: Up to this many layers, each bar is labelled with its layer's name.
NAMED_TICKS = 8


class DeltaPlot(pg.PlotWidget):
    """Bar chart of ``LayerDelta.delta_output_db``, one bar per layer in module order."""

    def __init__(self, parent: Any = None):
        super().__init__(parent, background=colors.plot_background())
        self.setObjectName("delta_plot")
        item = self.getPlotItem()
        item.setMenuEnabled(False)
        item.hideButtons()
        item.showGrid(x=False, y=True, alpha=0.25)
        item.setLabel("left", "Δ output SQNR", units="dB")
        item.setLabel("bottom", "layer (module order)")
        item.getAxis("left").enableAutoSIPrefix(False)
        self.view = item.getViewBox()
        self.view.setMouseEnabled(x=True, y=False)
        self.bars = pg.BarGraphItem(x=np.zeros(0), height=np.zeros(0), width=_BAR_WIDTH, brushes=[], pen=None)
        self.zero = pg.InfiniteLine(pos=0.0, angle=0, movable=False, pen=pg.mkPen(colors.FLOAT, width=1))
        self.hover = pg.TextItem(anchor=(0.5, 1.0), color=colors.TEXT_ON_DARK, fill=colors.TOOLTIP_FILL)
        self.hover.setZValue(100)
        for part in (self.bars, self.zero, self.hover):
            item.addItem(part)
        self.hover.hide()
        self.scene().sigMouseMoved.connect(self._mouse_moved)
        self.set_layers([])

    def set_layers(self, layers: list[Any]) -> None:
        """Draw the LayerDeltas of a comparison."""
        self.layers = list(layers)
        finite = [abs(d.delta_output_db) for d in layers if d.delta_output_db is not None]
        finite = [v for v in finite if math.isfinite(v)]
        self.cap = max(max(finite, default=1.0) * 1.15, 1.0)
        self.heights = [self._height(d.delta_output_db) for d in layers]
        brushes = [pg.mkBrush(colors.OK if h >= 0 else colors.ERROR) for h in self.heights]
        self.bars.setOpts(
            x=np.arange(len(layers), dtype=float), height=np.array(self.heights, dtype=float), brushes=brushes
        )
        self.view.setLimits(xMin=-0.6, xMax=max(len(layers), 4) - 0.4)
        self.view.setXRange(-0.6, max(len(layers), 1) - 0.4, padding=0.02)
        low, high = min(self.heights, default=0.0), max(self.heights, default=0.0)
        low, high = min(low, 0.0), max(high, 0.0)
        if low == high:
            low, high = -1.0, 1.0
        margin = (high - low) * 0.08
        self.view.setYRange(low - margin, high + margin, padding=0)  # the zero line stays in view
        self.getPlotItem().getAxis("bottom").setTicks([self._ticks()])
        self.hover.hide()

    def _ticks(self) -> list[tuple[float, str]]:
        """Layer names under the bars while they fit (a few layers), else every n-th index."""
        n = len(self.layers)
        if n <= NAMED_TICKS:
            return [(float(i), d.name) for i, d in enumerate(self.layers)]
        step = max(1, math.ceil(n / NAMED_TICKS))
        return [(float(i), str(i)) for i in range(0, n, step)]

    def _height(self, delta: float | None) -> float:
        if delta is None:
            return 0.0
        if math.isinf(delta):
            return self.cap if delta > 0 else -self.cap
        return delta

    def bar_count(self) -> int:
        return sum(1 for d in self.layers if d.delta_output_db is not None)

    def slot_at(self, scene_pos: QPointF) -> int | None:
        """The layer whose bar is under a scene position, or None."""
        if not self.view.sceneBoundingRect().contains(scene_pos):
            return None
        x = self.view.mapSceneToView(scene_pos).x()
        slot = round(x)
        if 0 <= slot < len(self.layers) and abs(x - slot) <= _BAR_WIDTH / 2 + 0.1:
            return slot
        return None

    def describe(self, slot: int) -> str:
        """Hover text: the layer's name, its output SQNR in both runs and the change."""
        d = self.layers[slot]
        return (
            f"{d.name}\nA {format_db(d.output_sqnr_a_db)} → B {format_db(d.output_sqnr_b_db)}"
            f"\nΔ {db_delta_text(d.delta_output_db)}"
        )

    def _mouse_moved(self, scene_pos: QPointF) -> None:
        slot = self.slot_at(scene_pos)
        if slot is None:
            self.hover.hide()
            return
        # At the pointer, on the side of it that stays in view: below it in the upper half,
        # above it in the lower; the first bar's text runs right, the last one's left.
        y = self.view.mapSceneToView(scene_pos).y()
        (_x0, _x1), (low, high) = self.view.viewRange()
        self.hover.setAnchor((slot / max(len(self.layers) - 1, 1), 0.0 if y > (low + high) / 2 else 1.0))
        self.hover.setText(self.describe(slot))
        self.hover.setPos(slot, y)
        self.hover.show()
