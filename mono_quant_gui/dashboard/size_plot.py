"""Original vs quantized size (and the saved file) as horizontal bars with their values."""

from __future__ import annotations

import numpy as np
import pyqtgraph as pg

from mono_quant_gui.window import colors
from mono_quant_gui.window.formatting import format_bytes

_ROWS = (("float", colors.FLOAT), ("quantized", colors.QUANTIZED), ("file", colors.FILE))


class SizePlot(pg.PlotWidget):
    """Three bars: the float model's bytes, the quantized model's bytes, the saved file's bytes."""

    def __init__(self, parent=None):
        super().__init__(parent, background=colors.plot_background())
        self.setObjectName("size_plot")
        item = self.getPlotItem()
        item.setMenuEnabled(False)
        item.hideButtons()
        item.setMouseEnabled(x=False, y=False)
        item.hideAxis("bottom")
        left = item.getAxis("left")
        left.setTicks([[(i, name) for i, (name, _) in enumerate(_ROWS)]])
        left.setWidth(78)
        self.view = item.getViewBox()
        self.view.invertY(True)
        self.bars = pg.BarGraphItem(
            x0=np.zeros(3),
            y=np.arange(3.0),
            height=0.62,
            width=np.zeros(3),
            brushes=[pg.mkBrush(c) for _, c in _ROWS],
            pen=None,
        )
        item.addItem(self.bars)
        self.labels = [pg.TextItem(anchor=(0.0, 0.5), color=colors.plot_foreground()) for _ in _ROWS]
        for label in self.labels:
            item.addItem(label)
        self.sizes: list[int | None] = [None, None, None]
        self._redraw()

    def set_sizes(self, original: int | None, quantized: int | None, file: int | None = None) -> None:
        """Show the sizes in bytes (None: not known yet)."""
        self.sizes = [original, quantized, file]
        self._redraw()

    def _redraw(self) -> None:
        widths = np.array([float(s or 0) for s in self.sizes])
        top = max(widths.max(), 1.0)
        self.bars.setOpts(width=widths)
        original = self.sizes[0]
        for i, (label, size) in enumerate(zip(self.labels, self.sizes, strict=False)):
            text = "—" if size is None else format_bytes(size)
            if i > 0 and size and original:
                text += f"  ({original / size:.1f}× smaller)" if size < original else ""
            label.setText(text)
            label.setPos(float(size or 0) + top * 0.02, i)
        # Room on the right for the value labels.
        self.view.setRange(xRange=(0, top * 1.75), yRange=(-0.5, 2.5), padding=0)
