"""The Runs pane: one row per run of the model on screen, with Show, Save… and Compare.

A thin view: :class:`~mono_quant_gui.runs.run_list.RunList` fills it with
:meth:`RunsPanel.set_runs` and answers its signals ``show_requested(index)``,
``save_requested(index)`` and ``compare_requested(index_a, index_b)`` (indices
into ``session.runs``, A the older run).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from PySide6.QtCore import QSize, Qt, Signal
from PySide6.QtGui import QAction, QFont
from PySide6.QtWidgets import (
    QAbstractItemView,
    QHeaderView,
    QStackedWidget,
    QTableWidget,
    QTableWidgetItem,
    QToolBar,
    QVBoxLayout,
    QWidget,
)

from mono_quant_core.report import format_db, human_bytes
from mono_quant_gui.runs import run_text
from mono_quant_gui.window.empty_state import EmptyState
from mono_quant_gui.window.icons import icon

COLUMNS = ("#", "Settings", "Output SQNR", "Metric", "Size", "Time", "File")
HINT_TITLE = "No runs yet"
HINT_TEXT = "Each Quantize of the open model adds a run here; select two to compare them."


class RunsPanel(QWidget):
    """The run list and its three buttons."""

    show_requested = Signal(int)
    save_requested = Signal(int)
    compare_requested = Signal(int, int)

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.setObjectName("runs_panel")
        self._busy = False
        self.show_action = self._action("show", "Show", "Show the selected run on the dashboard and in the tree")
        self.save_action = self._action("save", "Save…", "Save the selected run as a quantized model", "save")
        self.compare_action = self._action(
            "compare", "Compare", "Compare the two selected runs side by side (the newer against the older)"
        )
        tools = QToolBar(objectName="runs_tools")
        tools.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextBesideIcon)
        tools.setIconSize(QSize(16, 16))
        for action in (self.show_action, self.save_action, self.compare_action):
            tools.addAction(action)
        self.table = QTableWidget(0, len(COLUMNS), objectName="runs_table")
        self.table.setHorizontalHeaderLabels(list(COLUMNS))
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.ExtendedSelection)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.verticalHeader().hide()
        self.table.setWordWrap(False)
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        header.setSectionResizeMode(1, QHeaderView.ResizeMode.Stretch)
        header.setStretchLastSection(False)
        self.hint = EmptyState(HINT_TITLE, HINT_TEXT)
        self.pages = QStackedWidget()
        self.pages.addWidget(self.hint)
        self.pages.addWidget(self.table)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.addWidget(tools)
        layout.addWidget(self.pages, 1)
        self.show_action.triggered.connect(lambda: self._emit_one(self.show_requested))
        self.save_action.triggered.connect(lambda: self._emit_one(self.save_requested))
        self.compare_action.triggered.connect(self._emit_compare)
        self.table.itemSelectionChanged.connect(self.update_state)
        self.table.cellDoubleClicked.connect(lambda row, _column: self.show_requested.emit(row))
        self.update_state()

    def _action(self, name: str, text: str, tip: str, icon_name: str | None = None) -> QAction:
        action = QAction(text, self)
        action.setObjectName(f"runs_{name}")
        action.setToolTip(tip)
        action.setStatusTip(tip)
        if icon_name:
            action.setIcon(icon(icon_name))
        return action

    # -- filling ----------------------------------------------------------------------------
    def set_runs(self, results: list[Any], files: list[str | None], shown: int | None) -> None:
        """One row per QuantResult (oldest first), ``files[i]`` the file run i was saved to, run
        ``shown`` (the dashboard's) in bold.  The selection is kept where its rows still exist."""
        selected = self.selected_rows()
        self.table.setRowCount(len(results))
        for row, (result, file) in enumerate(zip(results, files, strict=True)):
            r = result.report
            texts = (
                str(row + 1),
                run_text.settings_summary(r),
                format_db(r.output_sqnr_db),
                run_text.metric_text(r),
                human_bytes(r.quantized_bytes),
                run_text.elapsed_text(r.elapsed_s),
                Path(file).name if file else "",
            )
            for column, text in enumerate(texts):
                item = QTableWidgetItem(text)
                if column in (0, 2, 4, 5):
                    item.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
                if column == 6 and file:
                    item.setToolTip(file)
                if row == shown:
                    font = QFont(item.font())
                    font.setBold(True)
                    item.setFont(font)
                    item.setToolTip(item.toolTip() or "On the dashboard now")
                self.table.setItem(row, column, item)
        self.select_rows([row for row in selected if row < len(results)])
        self.pages.setCurrentWidget(self.table if results else self.hint)
        self.update_state()

    def _add_row(self, row: int) -> None:
        model = self.table.selectionModel()
        index = self.table.model().index(row, 0)
        model.select(index, model.SelectionFlag.Select | model.SelectionFlag.Rows)

    def set_busy(self, busy: bool) -> None:
        """While the window's runner works, Show and Save wait (Compare reads reports only)."""
        self._busy = busy
        self.update_state()

    # -- selection --------------------------------------------------------------------------
    def selected_rows(self) -> list[int]:
        return sorted({index.row() for index in self.table.selectionModel().selectedRows()})

    def select_rows(self, rows: list[int]) -> None:
        self.table.clearSelection()
        for row in rows:
            self._add_row(row)

    def update_state(self) -> None:
        n = len(self.selected_rows())
        self.show_action.setEnabled(n == 1 and not self._busy)
        self.save_action.setEnabled(n == 1 and not self._busy)
        self.compare_action.setEnabled(n == 2)

    def _emit_one(self, signal: Any) -> None:
        rows = self.selected_rows()
        if len(rows) == 1:
            signal.emit(rows[0])

    def _emit_compare(self) -> None:
        rows = self.selected_rows()
        if len(rows) == 2:
            self.compare_requested.emit(rows[0], rows[1])
