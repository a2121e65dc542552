"""Per-layer SQNR bars that fill in as layers finish (pyqtgraph; items created once, then setOpts/setData).

Bars are weight SQNR; dots (after validation) are each layer's output SQNR;
a horizontal line marks the model's output SQNR.  Identical tensors give
``inf``: the bar is drawn to a cap above the largest finite value and marked
with "∞".  The view shows a window of layers; the rest are reached by
panning (drag or wheel), hovering shows the layer's name and value, and a
click emits ``layer_clicked(name)``.
"""

from __future__ import annotations

import math
from functools import cache
from typing import Any

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QPointF, Signal
from PySide6.QtGui import QFont, QPainterPath, QTransform

from mono_quant_core.report import format_db
from mono_quant_gui.window import colors

#: Bars shown at once; the others are reached by panning.
WINDOW = 48
_BAR_WIDTH = 0.72


@cache
def _text_symbol(text: str) -> QPainterPath:
    """A scatter symbol drawn as ``text``, centred on the point and about one unit tall."""
    path = QPainterPath()
    path.addText(0, 0, QFont("sans-serif", 10), text)
    box = path.boundingRect()
    scale = 1.0 / max(box.width(), box.height())
    transform = QTransform().scale(scale, scale).translate(-box.center().x(), -box.center().y())
    return transform.map(path)


class SqnrPlot(pg.PlotWidget):
    """Bar chart of per-layer weight SQNR in dB, for a handful or for thousands of layers."""

    layer_clicked = Signal(str)

    def __init__(self, parent=None):
        super().__init__(parent, background=colors.plot_background())
        self.setObjectName("sqnr_plot")
        item = self.getPlotItem()
        item.setMenuEnabled(False)
        item.hideButtons()
        item.showGrid(x=False, y=True, alpha=0.25)
        item.setLabel("left", "SQNR", units="dB")  # short: the plot may be low; the note says which is which
        item.setLabel("bottom", "layer (module order)")
        item.getAxis("left").enableAutoSIPrefix(False)
        self.view = item.getViewBox()
        self.view.setMouseEnabled(x=True, y=False)
        self.view.setDefaultPadding(0.02)
        self.bars = pg.BarGraphItem(x=np.zeros(0), height=np.zeros(0), width=_BAR_WIDTH, brushes=[], pen=None)
        self.infinity = pg.ScatterPlotItem(size=18, symbol=_text_symbol("∞"), pen=None, brush=colors.INF)
        self.outputs = pg.ScatterPlotItem(
            size=7, symbol="o", pen=pg.mkPen(colors.TEXT_ON_DARK, width=1), brush=colors.OUTPUT
        )
        self.model_line = pg.InfiniteLine(angle=0, movable=False, pen=pg.mkPen(colors.OUTPUT, width=1.5))
        self.model_label = pg.TextItem(anchor=(0.0, 1.0), color=colors.TEXT_ON_DARK, fill=colors.OUTPUT)
        self.model_label.setZValue(50)
        self.warn_line = pg.InfiniteLine(
            angle=0, movable=False, pen=pg.mkPen(colors.LOW, width=1, style=pg.QtCore.Qt.PenStyle.DashLine)
        )
        self.hover = pg.TextItem(anchor=(0.5, 1.0), color=colors.TEXT_ON_DARK, fill=colors.TOOLTIP_FILL)
        self.hover.setZValue(100)
        for part in (
            self.bars,
            self.infinity,
            self.outputs,
            self.model_line,
            self.model_label,
            self.warn_line,
            self.hover,
        ):
            item.addItem(part)
        self.hover.hide()
        self.model_line.hide()
        self.model_label.hide()
        self.warn_line.hide()
        self.view.sigXRangeChanged.connect(self._place_model_label)
        self.scene().sigMouseMoved.connect(self._mouse_moved)
        self.scene().sigMouseClicked.connect(self._mouse_clicked)
        self.view.sigRangeChangedManually.connect(self._user_moved)
        self.reset([])

    # -- data -----------------------------------------------------------------------------
    def reset(self, names: list[str], warn_db: float | None = None) -> None:
        """Prepare for a run over ``names`` (bars appear as their layers finish)."""
        self.names = list(names)
        self._slot = {n: i for i, n in enumerate(self.names)}
        self.values: dict[int, float | None] = {}
        self.statuses: dict[int, str] = {}
        self.output_values: dict[int, float | None] = {}
        self._follow = True
        self.model_line.hide()
        self.model_label.hide()
        self.hover.hide()
        if warn_db is not None:
            self.warn_line.setValue(warn_db)
            self.warn_line.show()
        else:
            self.warn_line.hide()
        self._redraw()

    def add_layers(self, layers: list[Any]) -> None:
        """Add finished layers (LayerReports); one redraw for the whole batch."""
        for layer in layers:
            slot = self._slot.get(layer.name)
            if slot is None:
                slot = self._slot[layer.name] = len(self.names)
                self.names.append(layer.name)
            self.values[slot] = layer.weight_sqnr_db
            self.statuses[slot] = layer.status
            if layer.output_sqnr_db is not None:
                self.output_values[slot] = layer.output_sqnr_db
        self._redraw()

    def set_model_sqnr(self, value: float | None) -> None:
        """Mark the whole model's output SQNR with a labelled line."""
        if value is None:
            self.model_line.hide()
            self.model_label.hide()
            return
        cap = self._cap()
        self.model_line.setValue(cap if math.isinf(value) else value)
        self.model_label.setText(f"model output {format_db(value)}")
        self.model_line.show()
        self.model_label.show()
        self._place_model_label()

    def _place_model_label(self, *_: Any) -> None:
        """Keep the model-output label at the left edge of whatever part of the chart is shown."""
        left = self.view.viewRange()[0][0]
        self.model_label.setPos(left, self.model_line.value())

    def bar_count(self) -> int:
        """How many bars are drawn (one per finished layer)."""
        return len(self.values)

    # -- drawing ----------------------------------------------------------------------------
    def _cap(self) -> float:
        finite = [
            v
            for v in list(self.values.values()) + list(self.output_values.values())
            if v is not None and math.isfinite(v)
        ]
        top = max(finite) if finite else 40.0
        return math.ceil(max(top, 10.0) * 1.15 / 5.0) * 5.0

    def _redraw(self) -> None:
        cap = self._cap()
        slots = sorted(self.values)
        heights = [self._height(self.values[s], cap) for s in slots]
        brushes = [self._brush(s) for s in slots]
        self.bars.setOpts(x=np.array(slots, dtype=float), height=np.array(heights, dtype=float), brushes=brushes)
        inf_slots = [s for s in slots if self._is_inf(self.values[s])]
        self.infinity.setData(x=inf_slots, y=[cap] * len(inf_slots))
        out = sorted(self.output_values)
        self.outputs.setData(x=out, y=[self._height(self.output_values[s], cap) for s in out])
        n = max(len(self.names), 1)
        self.view.setLimits(xMin=-0.6, xMax=max(n, 4) - 0.4, yMin=0.0, yMax=cap * 1.12)
        self.view.setYRange(0.0, cap * 1.08, padding=0)
        if self._follow:
            last = max(slots) if slots else 0
            right = max(last + 0.6, min(n, WINDOW) - 0.4)
            self.view.setXRange(max(right - WINDOW, -0.6), right, padding=0)

    @staticmethod
    def _is_inf(value: float | None) -> bool:
        return value is not None and math.isinf(value) and value > 0

    def _height(self, value: float | None, cap: float) -> float:
        if value is None:
            return 0.0
        if math.isinf(value):
            return cap if value > 0 else 0.0
        return max(value, 0.0)

    def _brush(self, slot: int) -> Any:
        if self._is_inf(self.values[slot]):
            return pg.mkBrush(colors.INF)
        return pg.mkBrush(colors.LOW if self.statuses.get(slot) == "low-sqnr" else colors.BAR)

    # -- interaction --------------------------------------------------------------------------
    def _user_moved(self, *_: Any) -> None:
        self._follow = False

    def slot_at(self, scene_pos: QPointF) -> int | None:
        """The finished layer under a scene position, or None."""
        if not self.view.sceneBoundingRect().contains(scene_pos):
            return None
        point = self.view.mapSceneToView(scene_pos)
        slot = round(point.x())
        if slot in self.values and abs(point.x() - slot) <= _BAR_WIDTH / 2 + 0.1:
            return slot
        return None

    def describe(self, slot: int) -> str:
        """Hover text of one bar: name, weight and output SQNR."""
        text = f"{self.names[slot]}\nweight {format_db(self.values[slot])}"
        if slot in self.output_values:
            text += f" · output {format_db(self.output_values[slot])}"
        return text

    def _mouse_moved(self, scene_pos: QPointF) -> None:
        slot = self.slot_at(scene_pos)
        if slot is None:
            self.hover.hide()
            return
        cap = self._cap()
        self.hover.setText(self.describe(slot))
        self.hover.setPos(slot, min(self._height(self.values[slot], cap) + cap * 0.02, cap))
        self.hover.show()

    def _mouse_clicked(self, event: Any) -> None:
        slot = self.slot_at(event.scenePos())
        if slot is not None:
            self.layer_clicked.emit(self.names[slot])
