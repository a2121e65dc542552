"""The queue's job table: whole-row selection, drag to reorder, a progress bar in the Progress column."""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtGui import QDropEvent
from PySide6.QtWidgets import QAbstractItemView, QHeaderView, QStyle, QTableView, QWidget

from mono_quant_gui.queue.entry import STATUSES
from mono_quant_gui.queue.model import CHECKPOINT, HOST, MESSAGE, NAME, OUTPUT, PROGRESS, STATUS, QueueModel
from mono_quant_gui.queue.progress_delegate import ProgressDelegate

#: The widest a name or file column grows to fit its contents (longer ones are elided; the tooltip has them).
MAX_FITTED_WIDTH = 280
#: The columns that fit their contents (Host is empty until a job runs: only its header's width).
FITTED = (NAME, CHECKPOINT, OUTPUT, HOST)
#: The table is never shorter than this many rows (with its header and a horizontal scroll bar).
MIN_ROWS = 5
#: Added to a text's width: the cell's margins and a little air.
_PADDING = 16
#: Added to the font's height for a row: room for the progress bar's frame around its text.
_ROW_PADDING = 8


class QueueTable(QTableView):
    """The job table; an internal drag moves rows (the model moves them, nothing is removed)."""

    def __init__(self, model: QueueModel, parent: QWidget | None = None):
        super().__init__(parent)
        self.setObjectName("queue_table")
        self.setModel(model)
        self.setItemDelegateForColumn(PROGRESS, ProgressDelegate(self))
        self.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.setSelectionMode(QAbstractItemView.SelectionMode.ExtendedSelection)
        self.setDragDropMode(QAbstractItemView.DragDropMode.InternalMove)
        self.setDefaultDropAction(Qt.DropAction.MoveAction)
        self.setDragDropOverwriteMode(False)
        self.setDropIndicatorShown(True)
        self.setAlternatingRowColors(True)
        self.setWordWrap(False)
        self.verticalHeader().setVisible(False)
        self.verticalHeader().setDefaultSectionSize(self.fontMetrics().height() + _ROW_PADDING)
        # Name and the two file names fit their contents (a queue holds tens of jobs, not thousands);
        # Status and Progress keep one width while jobs run; the message takes the rest.
        header = self.horizontalHeader()
        header.setMaximumSectionSize(MAX_FITTED_WIDTH)
        for column in FITTED:
            header.setSectionResizeMode(column, QHeaderView.ResizeMode.ResizeToContents)
        widest_status = max(self.fontMetrics().horizontalAdvance(s) for s in STATUSES) + _PADDING
        for column, width in ((STATUS, widest_status), (PROGRESS, 90)):
            header.setSectionResizeMode(column, QHeaderView.ResizeMode.Fixed)
            self.setColumnWidth(column, max(width, header.sectionSizeHint(column)))
        header.setSectionResizeMode(MESSAGE, QHeaderView.ResizeMode.Stretch)
        self.setMinimumHeight(self.height_for_rows(MIN_ROWS))
        # The header refits its ResizeToContents columns when data changes, not when rows come or go.
        for signal in (model.rowsInserted, model.rowsRemoved, model.modelReset):
            signal.connect(self._fit_columns)

    def height_for_rows(self, rows: int) -> int:
        """The height that shows ``rows`` whole rows under the header, a horizontal scroll bar included."""
        scroll_bar = self.style().pixelMetric(QStyle.PixelMetric.PM_ScrollBarExtent, None, self)
        return (
            self.horizontalHeader().sizeHint().height()
            + rows * self.verticalHeader().defaultSectionSize()
            + scroll_bar
            + 2 * self.frameWidth()
        )

    def _fit_columns(self, *_args) -> None:
        for column in FITTED:
            self.resizeColumnToContents(column)

    def dropEvent(self, event: QDropEvent) -> None:
        super().dropEvent(event)
        if event.isAccepted() and event.source() is self:
            # The model already moved the rows; a Move result would make the view
            # remove the dragged rows as well (QAbstractItemView::startDrag).
            event.setDropAction(Qt.DropAction.CopyAction)
