"""Two runs side by side (a non-modal dialog): the headline deltas, the config diff, per-layer bars and table.

It shows a :class:`mono_quant_core.ReportComparison` (deltas are B − A); the
window keeps one dialog and fills it again for each comparison.
"""

from __future__ import annotations

import html
from typing import Any

from PySide6.QtCore import Qt
from PySide6.QtGui import QBrush, QColor
from PySide6.QtWidgets import (
    QAbstractItemView,
    QDialog,
    QDialogButtonBox,
    QHeaderView,
    QLabel,
    QSplitter,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from mono_quant_core.report import format_db
from mono_quant_gui.runs import run_text
from mono_quant_gui.runs.delta_plot import DeltaPlot
from mono_quant_gui.window import colors

#: The colour of each verdict (B against A); "same" and unknown stay the palette's text colour.
VERDICT_COLORS = {run_text.BETTER: colors.OK, run_text.WORSE: colors.ERROR}
#: The per-layer table keeps the exact Δ here (the text is rounded).
DELTA_ROLE = Qt.ItemDataRole.UserRole


def _table(headers: list[str], name: str) -> QTableWidget:
    table = QTableWidget(0, len(headers), objectName=name)
    table.setHorizontalHeaderLabels(headers)
    table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
    table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
    table.verticalHeader().hide()
    table.setWordWrap(False)
    header = table.horizontalHeader()
    header.setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
    header.setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
    return table


def _item(text: str, right: bool = False, verdict: str | None = None) -> QTableWidgetItem:
    item = QTableWidgetItem(text)
    item.setToolTip(text)
    if right:
        item.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
    if verdict in VERDICT_COLORS:
        item.setForeground(QBrush(QColor(VERDICT_COLORS[verdict])))
    return item


class CompareDialog(QDialog):
    """Run B against run A: ``summary`` (coloured deltas), ``config_table``, ``plot``, ``layer_table``."""

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.setObjectName("compare_dialog")
        self.setModal(False)
        self.resize(980, 640)
        self.title = QLabel(objectName="compare_title")
        self.title.setStyleSheet("font-size: 12pt; font-weight: 600;")
        self.summary = QLabel(objectName="compare_summary")
        self.summary.setTextFormat(Qt.TextFormat.RichText)
        self.summary.setWordWrap(True)
        self.config_table = _table(["Setting", "A", "B"], "compare_config")
        self.layer_table = _table(["Layer", "A", "B", "Δ"], "compare_layers")
        self.plot = DeltaPlot()
        left = QSplitter(Qt.Orientation.Vertical)
        left.addWidget(self._titled("Settings that differ", self.config_table))
        left.addWidget(self._titled("Output SQNR per layer", self.layer_table))
        left.setStretchFactor(0, 1)
        left.setStretchFactor(1, 3)
        split = QSplitter(Qt.Orientation.Horizontal)
        split.addWidget(left)
        split.addWidget(self._titled("Δ output SQNR per layer (B − A; hover for the layer)", self.plot))
        split.setChildrenCollapsible(False)
        split.setSizes([420, 560])
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        buttons.rejected.connect(self.close)
        buttons.button(QDialogButtonBox.StandardButton.Close).setDefault(True)
        self.close_button = buttons.button(QDialogButtonBox.StandardButton.Close)
        layout = QVBoxLayout(self)
        layout.addWidget(self.title)
        layout.addWidget(self.summary)
        layout.addWidget(split, 1)
        layout.addWidget(buttons)

    @staticmethod
    def _titled(title: str, widget: QWidget) -> QWidget:
        box = QWidget()
        layout = QVBoxLayout(box)
        layout.setContentsMargins(0, 4, 0, 0)
        label = QLabel(title)
        label.setStyleSheet("font-weight: 600;")
        layout.addWidget(label)
        layout.addWidget(widget, 1)
        return box

    def set_comparison(self, comparison: Any, label_a: str, label_b: str) -> None:
        """Show ``comparison`` of run ``label_b`` (B) against run ``label_a`` (A)."""
        self.setWindowTitle(f"Compare runs {label_a} and {label_b}")
        self.title.setText(f"Run {label_b} (B) against run {label_a} (A)")
        self.summary.setText(self.summary_html(comparison))
        self._fill_config(comparison.config_diff)
        self._fill_layers(comparison.layers)
        self.plot.set_layers(comparison.layers)
        self.close_button.setFocus()  # no table cell looks selected

    @staticmethod
    def summary_html(comparison: Any) -> str:
        parts = []
        for text, verdict in run_text.summary_parts(comparison):
            escaped = html.escape(text)
            color = VERDICT_COLORS.get(verdict or "")
            parts.append(f'<span style="color:{color}">{escaped}</span>' if color else escaped)
        return " · ".join(parts)

    def _fill_config(self, diff: list[tuple[str, Any, Any]]) -> None:
        self.config_table.setRowCount(max(len(diff), 1))
        if not diff:
            self.config_table.setItem(0, 0, _item("the same settings"))
            for column in (1, 2):
                self.config_table.setItem(0, column, _item(""))
            return
        for row, (key, a, b) in enumerate(diff):
            self.config_table.setItem(row, 0, _item(key))
            self.config_table.setItem(row, 1, _item(run_text.config_value(a)))
            self.config_table.setItem(row, 2, _item(run_text.config_value(b)))

    def _fill_layers(self, layers: list[Any]) -> None:
        self.layer_table.setRowCount(len(layers))
        for row, d in enumerate(layers):
            name = _item(d.name)
            if not (d.in_a and d.in_b):
                name.setToolTip(f"{d.name}: quantized in run {'A' if d.in_a else 'B'} only")
            self.layer_table.setItem(row, 0, name)
            self.layer_table.setItem(row, 1, _item(format_db(d.output_sqnr_a_db, 2), right=True))
            self.layer_table.setItem(row, 2, _item(format_db(d.output_sqnr_b_db, 2), right=True))
            delta = _item(
                run_text.db_delta_text(d.delta_output_db), right=True, verdict=run_text.verdict(d.delta_output_db)
            )
            delta.setData(DELTA_ROLE, d.delta_output_db)
            self.layer_table.setItem(row, 3, delta)
