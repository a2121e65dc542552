"""The dashboard: headline figures, per-layer SQNR bars, sizes and calibration progress.

Before the first run it shows a hint instead of empty axes.  Layer results
arrive in batches (the window coalesces ``layer_done`` bursts), and each
batch costs one redraw.
"""

from __future__ import annotations

from typing import Any

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QFrame,
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QProgressBar,
    QSplitter,
    QStackedWidget,
    QVBoxLayout,
    QWidget,
)

from mono_quant_core.report import format_db

from .empty_state import EmptyState
from .formatting import format_bytes
from .size_plot import SizePlot
from .sqnr_plot import SqnrPlot


class Card(QFrame):
    """A titled figure: a small caption, a large value and a detail line."""

    def __init__(self, title: str, parent: QWidget | None = None):
        super().__init__(parent)
        self.setObjectName("card")
        self.setFrameShape(QFrame.Shape.StyledPanel)
        self.title = QLabel(title.upper())
        self.title.setStyleSheet("color: palette(placeholder-text); font-size: 8pt; letter-spacing: 1px;")
        self.value = QLabel("—")
        self.value.setStyleSheet("font-size: 17pt; font-weight: 600;")
        self.detail = QLabel("")
        self.detail.setStyleSheet("color: palette(placeholder-text);")
        self.detail.setWordWrap(True)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(12, 8, 12, 8)
        layout.setSpacing(2)
        for w in (self.title, self.value, self.detail):
            layout.addWidget(w)
        self.extra = layout

    def set(self, value: str, detail: str = "", color: str | None = None) -> None:
        self.value.setText(value)
        self.value.setStyleSheet(f"font-size: 17pt; font-weight: 600;{f' color: {color};' if color else ''}")
        self.detail.setText(detail)


class Dashboard(QStackedWidget):
    """Live view of a run; ``layer_clicked(name)`` comes from the SQNR bars."""

    layer_clicked = Signal(str)

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.setObjectName("dashboard")
        self.hint = EmptyState()
        self.addWidget(self.hint)
        self.page = QWidget()
        self.addWidget(self.page)
        self.output_card = Card("Output SQNR")
        self.size_card = Card("Size")
        self.layers_card = Card("Layers")
        self.calib_card = Card("Calibration")
        self.calib_bar = QProgressBar(objectName="calibration_progress", textVisible=False, maximumHeight=6)
        self.calib_card.extra.addWidget(self.calib_bar)
        cards = QHBoxLayout()
        cards.setSpacing(8)
        for card in (self.output_card, self.size_card, self.layers_card, self.calib_card):
            cards.addWidget(card, 1)
        self.sqnr_plot = SqnrPlot()
        self.sqnr_plot.layer_clicked.connect(self.layer_clicked)
        self.size_plot = SizePlot()
        splitter = QSplitter(Qt.Orientation.Vertical)
        splitter.addWidget(
            self._titled(
                "Per-layer SQNR",
                self.sqnr_plot,
                "bars: weight SQNR · dots: layer output SQNR · line: model output · "
                "drag or scroll to pan, click a bar to find its layer",
            )
        )
        splitter.addWidget(self._titled("Model size", self.size_plot, ""))
        splitter.setStretchFactor(0, 3)
        splitter.setStretchFactor(1, 1)
        splitter.setChildrenCollapsible(False)
        layout = QVBoxLayout(self.page)
        layout.setContentsMargins(8, 8, 8, 8)
        layout.addLayout(cards)
        layout.addWidget(splitter, 1)
        self._original = 0
        self._saved = 0
        self._n_layers = 0
        self._done = 0

    @staticmethod
    def _titled(title: str, body: QWidget, note: str) -> QWidget:
        box = QWidget()
        grid = QGridLayout(box)
        grid.setContentsMargins(0, 6, 0, 0)
        label = QLabel(f"<b>{title}</b>")
        grid.addWidget(label, 0, 0)
        if note:
            hint = QLabel(note)
            hint.setWordWrap(True)
            hint.setAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
            hint.setStyleSheet("color: palette(placeholder-text);")
            grid.addWidget(hint, 0, 1, Qt.AlignmentFlag.AlignRight)
        grid.addWidget(body, 1, 0, 1, 2)
        grid.setRowStretch(1, 1)
        return box

    # -- states ---------------------------------------------------------------------------
    def show_hint(self, title: str, text: str, actions: list[Any] | None = None) -> None:
        """Show the empty state (no run to show yet)."""
        self.hint.set_content(title, text, actions or [])
        self.setCurrentWidget(self.hint)

    def begin_run(self, names: list[str], original_bytes: int, static: bool, warn_db: float | None) -> None:
        """Reset for a run over the layers ``names`` of a model of ``original_bytes``."""
        self.setCurrentWidget(self.page)
        self._original, self._saved, self._n_layers, self._done = original_bytes, 0, len(names), 0
        self.sqnr_plot.reset(names, warn_db)
        self.size_plot.set_sizes(original_bytes, None)
        self.output_card.set("…", "measured after the last layer")
        self.size_card.set(format_bytes(original_bytes), "float model")
        self.layers_card.set(f"0 / {len(names)}", "quantizing")
        self.calib_bar.setRange(0, 1)
        self.calib_bar.setValue(0)
        if static:
            self.calib_card.set("…", "waiting to start")
        else:
            self.calib_card.set("—", "not needed in this mode")
        self.calib_bar.setVisible(static)

    def set_calibration(self, done: int, total: int) -> None:
        """Calibration progress in samples."""
        self.calib_bar.setRange(0, max(total, 1))
        self.calib_bar.setValue(min(done, total))
        self.calib_card.set(f"{done} / {total}", "samples observed" if done < total else "activation ranges set")

    def add_layers(self, layers: list[Any]) -> None:
        """Finished layers (LayerReports): bars, layer count and a running size estimate."""
        self.sqnr_plot.add_layers(layers)
        for layer in layers:
            self._saved += layer.original_bytes - layer.quantized_bytes
            self._done += 1
        self.layers_card.set(f"{self._done} / {self._n_layers}", "quantizing")
        estimate = max(self._original - self._saved, 0)
        self.size_plot.set_sizes(self._original, estimate)
        self.size_card.set(format_bytes(estimate), f"from {format_bytes(self._original)} (so far)")

    def finish(self, report: Any) -> None:
        """Final figures of a report (also when its checks failed)."""
        self.sqnr_plot.add_layers(report.layers)
        self.sqnr_plot.set_model_sqnr(report.output_sqnr_db)
        self.size_plot.set_sizes(report.original_bytes, report.quantized_bytes, report.file_bytes)
        ratio = f"{report.compression_ratio:.2f}× smaller" if report.compression_ratio else ""
        self.size_card.set(
            format_bytes(report.quantized_bytes), f"from {format_bytes(report.original_bytes)} · {ratio}"
        )
        low = sum(1 for layer in report.layers if layer.status == "low-sqnr")
        self.layers_card.set(
            f"{len(report.layers)}",
            f"quantized · {len(report.skipped)} kept in float" + (f" · {low} low SQNR" if low else ""),
        )
        color = None if report.passed else "#c0392b"
        detail = "validation passed" if report.passed else "; ".join(report.failures) or "checks failed"
        if report.validation_samples:
            detail += f" · {report.validation_samples} held-out samples"
        self.output_card.set(format_db(report.output_sqnr_db), detail, color)
        if report.calibration_samples:
            self.calib_bar.setRange(0, report.calibration_samples)
            self.calib_bar.setValue(report.calibration_samples)
            self.calib_card.set(
                str(report.calibration_samples), f"samples · {report.calibration_method or ''} observer"
            )

    def set_file_size(self, nbytes: int) -> None:
        """The saved file's size, as the third size bar."""
        original, quantized, _ = self.size_plot.sizes
        self.size_plot.set_sizes(original, quantized, nbytes)

    def stopped(self, why: str) -> None:
        """A run ended without a result (cancelled or failed)."""
        self.layers_card.set(f"{self._done} / {self._n_layers}", why)
        self.output_card.set("—", why)
        if self.calib_bar.isVisible() and self.calib_bar.value() < self.calib_bar.maximum():
            self.calib_card.set(self.calib_card.value.text(), why)
