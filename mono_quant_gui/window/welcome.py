"""The start page the dashboard shows while no model is open: where to begin, in one look.

A drop zone with **Open script…** and **Open the demo**, the three steps of
the flow, and a link to the user guide.  The buttons trigger the window's own
actions, so they behave exactly like the toolbar and menus.
"""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtGui import QAction
from PySide6.QtWidgets import QFrame, QGridLayout, QHBoxLayout, QLabel, QPushButton, QScrollArea, QVBoxLayout, QWidget

from mono_quant_gui import identity

TITLE = f"Welcome to {identity.DISPLAY_NAME}"
NON_BREAKING_HYPHEN = "\u2011"
SUBTITLE = (
    "Make a PyTorch model smaller and see what it costs: quantize the layers you pick, check the error "
    "layer by layer, and save a file PyTorch loads."
)
DROP_TITLE = "Drop a model script (.py) here"
DROP_TEXT = (
    "Then drop its checkpoint and a folder of calibration samples the same way. "
    "New to mono-quant? The demo opens a small example with everything in place."
)
STEPS = (
    ("1", "Open", "the model's script, its checkpoint and a calibration folder"),
    ("2", "Choose", "tick the layers, pick the data type, mode and observer"),
    ("3", "Quantize", "watch SQNR and size per layer, then Save As or queue it"),
)


class WelcomePage(QWidget):
    """The first-run page; ``open_script_button`` and ``open_demo_button`` trigger the given actions."""

    def __init__(self, open_script: QAction, open_demo: QAction, documentation: QAction, parent: QWidget | None = None):
        super().__init__(parent)
        self.setObjectName("welcome")
        icon = QLabel(alignment=Qt.AlignmentFlag.AlignCenter)
        icon.setPixmap(identity.app_icon().pixmap(48, 48))
        # In a narrow window the title breaks before the name, never at its hyphen.
        self.title = QLabel(
            TITLE.replace("-", NON_BREAKING_HYPHEN),
            objectName="welcome_title",
            alignment=Qt.AlignmentFlag.AlignCenter,
            textFormat=Qt.TextFormat.PlainText,
        )
        self.title.setStyleSheet("font-size: 18pt; font-weight: 600;")
        self.title.setWordWrap(True)
        subtitle = _muted(SUBTITLE)

        self.drop_zone = QFrame(objectName="drop_zone")
        self.drop_zone.setStyleSheet(
            "#drop_zone { border: 2px dashed palette(mid); border-radius: 12px; background: palette(base); }"
        )
        drop_title = QLabel(DROP_TITLE, alignment=Qt.AlignmentFlag.AlignCenter)
        drop_title.setStyleSheet("font-size: 13pt; font-weight: 600;")
        drop_title.setWordWrap(True)
        self.open_script_button = _button("open_script_button", "Open script…", open_script)
        self.open_demo_button = _button("open_demo_button", "Open the demo", open_demo)
        buttons = QHBoxLayout()
        buttons.setSpacing(12)
        buttons.addStretch(1)
        buttons.addWidget(self.open_script_button)
        buttons.addWidget(self.open_demo_button)
        buttons.addStretch(1)
        zone = QVBoxLayout(self.drop_zone)
        zone.setContentsMargins(20, 20, 20, 20)
        zone.setSpacing(10)
        zone.addWidget(drop_title)
        zone.addSpacing(4)
        zone.addLayout(buttons)  # before the explanation: visible in the smallest window
        zone.addSpacing(4)
        zone.addWidget(_muted(DROP_TEXT))

        steps = QGridLayout()
        steps.setHorizontalSpacing(10)
        steps.setVerticalSpacing(6)
        steps.setColumnStretch(2, 1)
        for row, (number, word, text) in enumerate(STEPS):
            badge = QLabel(number, alignment=Qt.AlignmentFlag.AlignCenter)
            badge.setFixedSize(24, 24)
            badge.setStyleSheet(
                "border-radius: 12px; font-weight: 600; "
                "background: palette(highlight); color: palette(highlighted-text);"
            )
            steps.addWidget(badge, row, 0)
            steps.addWidget(QLabel(f"<b>{word}</b>"), row, 1)
            detail = _muted(text)
            detail.setAlignment(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter)
            steps.addWidget(detail, row, 2)

        self.guide_link = QLabel(
            f"<a href='guide'>Read the user guide</a> ({documentation.shortcut().toString()})",
            objectName="guide_link",
            alignment=Qt.AlignmentFlag.AlignCenter,
        )
        self.guide_link.setTextInteractionFlags(
            Qt.TextInteractionFlag.LinksAccessibleByMouse | Qt.TextInteractionFlag.LinksAccessibleByKeyboard
        )
        self.guide_link.linkActivated.connect(lambda _link: documentation.trigger())

        column = QWidget()
        column.setMaximumWidth(600)
        layout = QVBoxLayout(column)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(12)
        layout.addWidget(icon)
        layout.addWidget(self.title)
        layout.addWidget(subtitle)
        layout.addSpacing(6)
        layout.addWidget(self.drop_zone)
        layout.addSpacing(10)
        layout.addLayout(steps)
        layout.addSpacing(6)
        layout.addWidget(self.guide_link)
        page = QWidget()
        outer = QVBoxLayout(page)
        outer.setContentsMargins(16, 16, 16, 16)
        outer.addStretch(1)
        row = QHBoxLayout()
        row.addStretch(1)
        row.addWidget(column, 10)
        row.addStretch(1)
        outer.addLayout(row)
        outer.addStretch(2)
        # Scrolls rather than making the window taller than a small screen.
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setFrameShape(QFrame.Shape.NoFrame)
        scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        scroll.setWidget(page)
        layout_self = QVBoxLayout(self)
        layout_self.setContentsMargins(0, 0, 0, 0)
        layout_self.addWidget(scroll)


def _muted(text: str) -> QLabel:
    label = QLabel(text, alignment=Qt.AlignmentFlag.AlignCenter)
    label.setWordWrap(True)
    label.setStyleSheet("color: palette(placeholder-text);")
    return label


def _button(name: str, text: str, action: QAction) -> QPushButton:
    button = QPushButton(action.icon(), text, objectName=name)
    button.setToolTip(action.toolTip())
    button.setMinimumHeight(34)
    button.setAutoDefault(False)
    button.clicked.connect(action.trigger)
    return button
