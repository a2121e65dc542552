"""The queue's job table: whole-row selection, drag to reorder, a progress bar in the Progress column."""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtGui import QDropEvent
from PySide6.QtWidgets import QAbstractItemView, QHeaderView, QTableView, QWidget

from .model import NAME, PROGRESS, QueueModel
from .progress_delegate import ProgressDelegate


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
        header = self.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.ResizeMode.Interactive)
        header.setStretchLastSection(True)
        for column, width in ((NAME, 160), (PROGRESS, 90)):
            self.setColumnWidth(column, width)

    def dropEvent(self, event: QDropEvent) -> None:
        super().dropEvent(event)
        if event.isAccepted() and event.source() is self:
            # The model already moved the rows; a Move result would make the view
            # remove the dragged rows as well (QAbstractItemView::startDrag).
            event.setDropAction(Qt.DropAction.CopyAction)
