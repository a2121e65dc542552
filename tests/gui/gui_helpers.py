"""Small helpers shared by the GUI tests."""

from __future__ import annotations

import warnings

from PySide6.QtCore import QMimeData, QPoint, QPointF, Qt, QUrl
from PySide6.QtGui import QDragEnterEvent, QDropEvent
from PySide6.QtWidgets import QApplication


def drop_paths(widget, paths: list[str]) -> QDropEvent:
    """Drag local ``paths`` onto ``widget`` and drop them, as a file manager would.

    Qt delivers a drop only to the widget that accepted the drag-enter, so the
    enter event goes first.
    """
    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(p)) for p in paths])
    with warnings.catch_warnings():
        # PySide6 marks the (only) QPoint constructor of QDragEnterEvent as deprecated.
        warnings.simplefilter("ignore", DeprecationWarning)
        enter = QDragEnterEvent(
            QPoint(10, 10), Qt.DropAction.CopyAction, mime, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier
        )
    QApplication.sendEvent(widget, enter)
    assert enter.isAccepted(), "the window refused the drag"
    event = QDropEvent(
        QPointF(10, 10), Qt.DropAction.CopyAction, mime, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier
    )
    QApplication.sendEvent(widget, event)
    return event


#: A small model script for queue tests: ``MLP.format(delay=seconds, probe=PROBE_MODULE)``.
#: Each forward reports its start and end to a test's probe installed as sys.modules[PROBE_MODULE].
MLP = """\
import sys
import time

from torch import nn

DELAY = {delay}


class MLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(16, 32)
        self.act = nn.ReLU()
        self.fc2 = nn.Linear(32, 4)

    def forward(self, x):
        probe = sys.modules.get("{probe}")  # a test's SampleProbe, when one is installed
        if probe is not None:
            probe.begin()
        time.sleep(DELAY)  # a slow model
        out = self.fc2(self.act(self.fc1(x)))
        if probe is not None:
            probe.end()
        return out
"""
PROBE_MODULE = "mono_quant_test_sample_probe"
