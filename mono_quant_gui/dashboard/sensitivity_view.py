"""The Sensitivity pane: one horizontal bar per layer, most sensitive at the top (pyqtgraph).

A bar is the model's output SQNR with only that layer quantized, or its metric
drop when a metric ran (a toggle picks); a line marks the output SQNR with every
layer quantized.  Hovering shows the layer's values; a click emits ``layer_clicked``.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QPointF, Signal
from PySide6.QtGui import QAction
from PySide6.QtWidgets import QHBoxLayout, QLabel, QRadioButton, QStackedWidget, QVBoxLayout, QWidget

from mono_quant_core.report import format_db
from mono_quant_gui.window import colors
from mono_quant_gui.window.empty_state import EmptyState

_BAR_HEIGHT = 0.7
_NAME_CHARS = 30


def _short(name: str) -> str:
    return name if len(name) <= _NAME_CHARS else f"{name[:12]}…{name[-(_NAME_CHARS - 13) :]}"


class SensitivityView(QStackedWidget):
    """A hint until an analysis finished, then its chart and summary."""

    layer_clicked = Signal(str)

    def __init__(self, analyze: QAction | None = None, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("sensitivity_view")
        self.hint = EmptyState(
            "No sensitivity analysis",
            "Analyze Sensitivity quantizes each ticked layer alone and measures what it costs the model's output.",
            [analyze] if analyze is not None else [],
        )
        self.addWidget(self.hint)
        page = QWidget()
        self.summary = QLabel(objectName="sensitivity_summary")
        self.summary.setWordWrap(True)
        self.by_sqnr = QRadioButton("Output SQNR")
        self.by_metric = QRadioButton("Metric drop")
        self.by_metric.toggled.connect(lambda _on: self._redraw())
        top = QHBoxLayout()
        top.addWidget(self.summary, 1)
        top.addWidget(self.by_sqnr)
        top.addWidget(self.by_metric)
        self.plot = pg.PlotWidget(background=colors.plot_background())
        item = self.plot.getPlotItem()
        item.setMenuEnabled(False)
        item.hideButtons()
        item.showGrid(x=True, y=False, alpha=0.25)
        item.getAxis("bottom").enableAutoSIPrefix(False)  # a drop of 0.002 reads as 0.002, not 2 (x0.001)
        self.view = item.getViewBox()
        self.view.invertY(True)
        self.view.setMouseEnabled(x=False, y=True)
        self.bars = pg.BarGraphItem(x0=np.zeros(0), y=np.zeros(0), width=np.zeros(0), height=_BAR_HEIGHT, pen=None)
        self.reference = pg.InfiniteLine(
            angle=90, movable=False, pen=pg.mkPen(colors.OUTPUT, width=1.5, style=pg.QtCore.Qt.PenStyle.DashLine)
        )
        self.hover = pg.TextItem(anchor=(0.0, 0.5), color=colors.TEXT_ON_DARK, fill=colors.TOOLTIP_FILL)
        self.hover.setZValue(100)
        for part in (self.bars, self.reference, self.hover):
            item.addItem(part)
        self.hover.hide()
        self.plot.scene().sigMouseMoved.connect(self._mouse_moved)
        self.plot.scene().sigMouseClicked.connect(lambda event: self._clicked(event.scenePos()))
        layout = QVBoxLayout(page)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.addLayout(top)
        layout.addWidget(self.plot, 1)
        self.addWidget(page)
        self.page = page
        self.report: Any = None
        self.layers: list[Any] = []  # in the order drawn, top first
        self.values: list[float | None] = []

    # -- data ------------------------------------------------------------------------------
    def set_report(self, report: Any) -> None:
        """Show a SensitivityReport (the metric drop first when a metric ran)."""
        self.report = report
        has_metric = report.metric_name is not None
        self.by_sqnr.setVisible(has_metric)
        self.by_metric.setVisible(has_metric)
        self.by_metric.blockSignals(True)
        (self.by_metric if has_metric else self.by_sqnr).setChecked(True)
        self.by_metric.blockSignals(False)
        best = report.layers[0] if report.layers else None
        parts = [f"{len(report.layers)} layers"]
        if best is not None:
            parts.append(f"most sensitive: {best.name}")
        parts.append(f"all quantized: output {format_db(report.all_quantized_output_sqnr_db)}")
        if report.float_metric is not None:
            parts.append(f"float {report.metric_name} {report.float_metric:.4g}")
        self.summary.setText(" · ".join(parts))
        self.setCurrentWidget(self.page)
        self._redraw()

    def clear(self) -> None:
        self.report, self.layers, self.values = None, [], []
        self.bars.setOpts(x0=np.zeros(0), y=np.zeros(0), width=np.zeros(0))
        self.setCurrentWidget(self.hint)

    def metric_shown(self) -> bool:
        return self.report is not None and self.report.metric_name is not None and self.by_metric.isChecked()

    def bar_names(self) -> list[str]:
        return [layer.name for layer in self.layers]

    # -- drawing ----------------------------------------------------------------------------
    def _redraw(self) -> None:
        if self.report is None:
            return
        by_metric = self.metric_shown()
        if by_metric:
            self.layers = list(self.report.layers)  # the report's order: the largest drop first
            self.values = [layer.metric_drop for layer in self.layers]
        else:
            self.layers = sorted(
                self.report.layers, key=lambda x: math.inf if x.output_sqnr_db is None else x.output_sqnr_db
            )
            self.values = [layer.output_sqnr_db for layer in self.layers]
        finite = [v for v in self.values if v is not None and math.isfinite(v)]
        cap = max(finite, default=1.0) * 1.1 or 1.0
        drawn = [0.0 if v is None else (cap if math.isinf(v) else v) for v in self.values]
        n = len(drawn)
        self.bars.setOpts(
            x0=np.array([min(0.0, v) for v in drawn]),
            y=np.arange(n, dtype=float),
            width=np.abs(np.array(drawn, dtype=float)),
            brush=pg.mkBrush(colors.LOW if by_metric else colors.OUTPUT),
        )
        item = self.plot.getPlotItem()
        item.getAxis("left").setTicks([[(i, _short(layer.name)) for i, layer in enumerate(self.layers)]])
        item.setLabel(
            "bottom", f"{self.report.metric_name} drop" if by_metric else "output SQNR, only this layer quantized (dB)"
        )
        ref = self.report.all_quantized_output_sqnr_db
        self.reference.setVisible(not by_metric and ref is not None and math.isfinite(ref))
        if self.reference.isVisible():
            self.reference.setValue(ref)
            cap = max(cap, ref * 1.1)
        self.view.setLimits(yMin=-0.6, yMax=max(n, 1) - 0.4)
        self.view.setXRange(min(0.0, min(drawn, default=0.0)), cap, padding=0.02)
        self.view.setYRange(-0.6, min(n, 12) - 0.4, padding=0)

    def describe(self, index: int) -> str:
        layer = self.layers[index]
        text = f"{layer.name} ({layer.type}, rank {layer.rank})\noutput {format_db(layer.output_sqnr_db)}"
        text += f" · weight {format_db(layer.weight_sqnr_db)}"
        if layer.metric_drop is not None:
            text += f"\n{self.report.metric_name} {layer.metric:.4g} (drop {layer.metric_drop:.4g})"
        return text

    # -- interaction --------------------------------------------------------------------------
    def bar_at(self, scene_pos: QPointF) -> int | None:
        if not self.view.sceneBoundingRect().contains(scene_pos):
            return None
        point = self.view.mapSceneToView(scene_pos)
        index = round(point.y())
        if 0 <= index < len(self.layers) and abs(point.y() - index) <= _BAR_HEIGHT / 2 + 0.1:
            return index
        return None

    def _mouse_moved(self, scene_pos: QPointF) -> None:
        index = self.bar_at(scene_pos)
        if index is None:
            self.hover.hide()
            return
        self.hover.setText(self.describe(index))
        self.hover.setPos(self.view.viewRange()[0][0], index)
        self.hover.show()

    def _clicked(self, scene_pos: QPointF) -> None:
        index = self.bar_at(scene_pos)
        if index is not None:
            self.click_bar(index)

    def click_bar(self, index: int) -> None:
        """A click on bar ``index`` (0: the top one): its layer is selected in the module tree."""
        self.layer_clicked.emit(self.layers[index].name)
