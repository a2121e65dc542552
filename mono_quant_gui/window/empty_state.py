"""The hint an empty pane shows: what goes here and how to get it (with buttons for the actions)."""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtGui import QAction
from PySide6.QtWidgets import QHBoxLayout, QLabel, QToolButton, QVBoxLayout, QWidget


class EmptyState(QWidget):
    """A centred title, an explanation and optional action buttons."""

    def __init__(
        self, title: str = "", text: str = "", actions: list[QAction] | None = None, parent: QWidget | None = None
    ):
        super().__init__(parent)
        self.setObjectName("empty_state")
        self.title = QLabel(alignment=Qt.AlignmentFlag.AlignCenter)
        self.title.setStyleSheet("font-size: 13pt; font-weight: 600;")
        self.title.setWordWrap(True)
        self.text = QLabel(alignment=Qt.AlignmentFlag.AlignCenter)
        self.text.setWordWrap(True)
        self.text.setStyleSheet("color: palette(placeholder-text);")
        self.buttons = QHBoxLayout()
        self.buttons.setAlignment(Qt.AlignmentFlag.AlignCenter)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(16, 16, 16, 16)
        layout.addStretch(1)
        layout.addWidget(self.title)
        layout.addWidget(self.text)
        layout.addSpacing(8)
        layout.addLayout(self.buttons)
        layout.addStretch(2)
        self.set_content(title, text, actions or [])

    def set_content(self, title: str, text: str, actions: list[QAction]) -> None:
        """Replace the hint's title, text and buttons."""
        self.title.setText(title)
        self.title.setVisible(bool(title))
        self.text.setText(text)
        while self.buttons.count():
            widget = self.buttons.takeAt(0).widget()
            if widget is not None:
                widget.deleteLater()
        for action in actions:
            button = QToolButton()
            button.setDefaultAction(action)
            button.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextBesideIcon)
            self.buttons.addWidget(button)
