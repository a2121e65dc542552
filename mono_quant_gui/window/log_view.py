"""The log pane and the logging handler that feeds it from any thread."""

from __future__ import annotations

import contextlib
import logging

from PySide6.QtCore import QObject, Signal
from PySide6.QtGui import QFontDatabase
from PySide6.QtWidgets import QPlainTextEdit, QWidget

_FORMAT = "%(asctime)s  %(levelname)-7s %(message)s"


class _Bridge(QObject):
    record = Signal(str, int)


class QtLogHandler(logging.Handler):
    """Formats records and hands them to the GUI thread through a queued signal."""

    def __init__(self, level: int = logging.INFO):
        super().__init__(level)
        self.bridge = _Bridge()
        self.setFormatter(logging.Formatter(_FORMAT, "%H:%M:%S"))

    def emit(self, record: logging.LogRecord) -> None:
        with contextlib.suppress(RuntimeError):  # the view was deleted while a worker still logged
            self.bridge.record.emit(self.format(record), record.levelno)


class LogView(QPlainTextEdit):
    """Read-only, bounded log; attach() routes Python logging (the engine's and ours) here."""

    MAX_LINES = 5000

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.setObjectName("log_view")
        self.setReadOnly(True)
        self.setAcceptDrops(False)
        self.setMaximumBlockCount(self.MAX_LINES)
        self.setFont(QFontDatabase.systemFont(QFontDatabase.SystemFont.FixedFont))
        self.setPlaceholderText("Messages from loading, calibration, quantization and saving appear here.")
        self.handler = QtLogHandler()
        self.handler.bridge.record.connect(self.append_line)
        self._loggers: list[logging.Logger] = []

    def attach(self, *names: str) -> None:
        """Route the named loggers (e.g. "mono_quant_core", "mono_quant_gui") to this view."""
        for name in names:
            logger = logging.getLogger(name)
            logger.addHandler(self.handler)
            if logger.level == logging.NOTSET or logger.level > logging.INFO:
                logger.setLevel(logging.INFO)
            self._loggers.append(logger)

    def detach(self) -> None:
        """Stop receiving records (called when the window closes)."""
        for logger in self._loggers:
            logger.removeHandler(self.handler)
        self._loggers.clear()

    def append_line(self, text: str, level: int = logging.INFO) -> None:
        """Add one line; warnings and errors are coloured."""
        if level >= logging.ERROR:
            text = f'<span style="color:#c0392b">{_escape(text)}</span>'
        elif level >= logging.WARNING:
            text = f'<span style="color:#b9770e">{_escape(text)}</span>'
        else:
            text = _escape(text)
        self.appendHtml(f"<pre style='margin:0'>{text}</pre>")


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
