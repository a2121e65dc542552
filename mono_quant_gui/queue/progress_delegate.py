"""Draws a job's progress cell as a progress bar (queued jobs show nothing)."""

from __future__ import annotations

from PySide6.QtCore import QModelIndex, QPersistentModelIndex
from PySide6.QtGui import QPainter
from PySide6.QtWidgets import QApplication, QStyle, QStyledItemDelegate, QStyleOptionProgressBar, QStyleOptionViewItem

from mono_quant_gui.queue.entry import QUEUED
from mono_quant_gui.queue.model import PROGRESS_ROLE, STATUS_ROLE


class ProgressDelegate(QStyledItemDelegate):
    """A progress bar in the cell, drawn by the current style over the usual item background."""

    def paint(
        self, painter: QPainter, option: QStyleOptionViewItem, index: QModelIndex | QPersistentModelIndex
    ) -> None:
        widget = option.widget
        style = widget.style() if widget is not None else QApplication.style()
        style.drawPrimitive(QStyle.PrimitiveElement.PE_PanelItemViewItem, option, painter, widget)
        if index.data(STATUS_ROLE) in (None, QUEUED):
            return
        bar = QStyleOptionProgressBar()
        bar.rect = option.rect.adjusted(2, 3, -2, -3)
        bar.state = option.state
        bar.minimum, bar.maximum = 0, 100
        bar.progress = int(index.data(PROGRESS_ROLE) or 0)
        bar.text = f"{bar.progress} %"
        bar.textVisible = True
        style.drawControl(QStyle.ControlElement.CE_ProgressBar, bar, painter, widget)
