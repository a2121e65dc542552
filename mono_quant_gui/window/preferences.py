"""Preferences: where the batch queue runs its jobs (this computer, or a Ray cluster) and how many at once.

The dialog edits a :class:`~mono_quant_gui.queue.target.QueueTarget`; the
window saves it (``SettingsStore.save_queue_target``) and hands it to the Queue
pane when the dialog is accepted.  **Test connection** asks the cluster
(``mono_quant_core.cluster.check_cluster``, bounded by a timeout) on the
dialog's own worker thread, so a wrong address never freezes the window, and
shows what it found: nodes, CPUs, GPUs, or the error.
"""

from __future__ import annotations

import html
from functools import partial
from typing import TypeVar

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QButtonGroup,
    QDialog,
    QDialogButtonBox,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QRadioButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from mono_quant_gui.queue import remote
from mono_quant_gui.queue.target import DEFAULT_ADDRESS, MAX_CONCURRENCY, QueueTarget
from mono_quant_gui.run.worker import Runner, Task
from mono_quant_gui.window import colors

ADDRESS_TIP = (
    "auto: the Ray cluster this computer has joined (ray start); "
    "ray://HOST:10001: a cluster's client port; "
    "local: a private Ray instance on this computer, to try it out"
)
CONCURRENCY_TIP = (
    "How many queued jobs run on the cluster at once. Automatic: as many as the cluster has free CPUs "
    "(or GPUs, for jobs that ask for one)"
)


_W = TypeVar("_W", bound=QWidget)


def _named(widget: _W, name: str) -> _W:
    """``widget`` with its object name set (tests and style sheets find it by name)."""
    widget.setObjectName(name)
    return widget


class PreferencesDialog(QDialog):
    """The Preferences window; :meth:`target` is what the user chose.

    ``checked(ok, text)`` fires when Test connection has an answer (also shown in the dialog).
    """

    checked = Signal(bool, str)

    def __init__(self, target: QueueTarget, parent: QWidget | None = None):
        super().__init__(parent)
        self.setObjectName("preferences")
        self.setWindowTitle("Preferences")
        self._checker: Runner | None = None
        #: What the last Test connection said, as plain text ("" before one).
        self.result_text = ""
        self._build()
        self.set_target(target)
        self.finished.connect(self._stop_checker)

    # -- building ---------------------------------------------------------------------------
    def _build(self) -> None:
        self.local = _named(QRadioButton("this computer, one job at a time"), "run_on_local")
        self.cluster = _named(QRadioButton("a Ray cluster at"), "run_on_cluster")
        self.where = QButtonGroup(self)
        self.where.addButton(self.local)
        self.where.addButton(self.cluster)
        self.address = _named(QLineEdit(), "ray_address")
        self.address.setPlaceholderText(DEFAULT_ADDRESS)
        self.address.setToolTip(ADDRESS_TIP)
        self.address.setMinimumWidth(self.fontMetrics().horizontalAdvance("ray://head-node.example.org:10001") + 24)
        self.test = _named(QPushButton("Test connection"), "test_connection")
        self.test.setToolTip("Ask the cluster at this address how many nodes, CPUs and GPUs it has")
        cluster_row = QHBoxLayout()
        cluster_row.setContentsMargins(0, 0, 0, 0)
        cluster_row.addWidget(self.cluster)
        cluster_row.addWidget(self.address, 1)
        cluster_row.addWidget(self.test)
        self.hint = _named(QLabel(ADDRESS_TIP.replace("; ", "\n")), "ray_address_hint")
        self.hint.setWordWrap(True)
        self.hint.setIndent(self.style().pixelMetric(self.style().PixelMetric.PM_ExclusiveIndicatorWidth) + 8)
        self.hint.setEnabled(False)  # drawn in the palette's disabled (grey) text
        self.hint.setMinimumHeight(self.hint.sizeHint().height())  # never squeezed by a long answer below
        self.result_label = _named(QLabel(), "connection_result")
        self.result_label.setWordWrap(True)
        self.result_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.result_label.setTextFormat(Qt.TextFormat.RichText)
        self.concurrency = _named(QSpinBox(), "concurrency")
        self.concurrency.setRange(0, MAX_CONCURRENCY)
        self.concurrency.setSpecialValueText("Automatic")
        self.concurrency.setSuffix(" jobs")
        self.concurrency.setToolTip(CONCURRENCY_TIP)

        box = _named(QGroupBox("Queue"), "queue_preferences")
        column = QVBoxLayout(box)
        column.addWidget(QLabel("Run queued jobs on:"))
        column.addWidget(self.local)
        column.addLayout(cluster_row)
        column.addWidget(self.hint)
        form = QFormLayout()
        form.addRow("Jobs at once on the cluster:", self.concurrency)
        column.addLayout(form)
        column.addWidget(self.result_label)
        self.buttons = _named(
            QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel),
            "preferences_buttons",
        )
        self.buttons.accepted.connect(self.accept)
        self.buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.addWidget(box)
        layout.addStretch(1)
        layout.addWidget(self.buttons)

        self.where.buttonToggled.connect(lambda *_: self._update())
        self.address.textChanged.connect(lambda _text: self._update())
        self.test.clicked.connect(self.test_connection)

    # -- values -----------------------------------------------------------------------------
    def set_target(self, target: QueueTarget) -> None:
        (self.cluster if target.remote else self.local).setChecked(True)
        self.address.setText(target.address)
        self.concurrency.setValue(target.concurrency)
        self._update()

    def target(self) -> QueueTarget:
        """What the dialog says now (the address as typed, ``auto`` when empty)."""
        return QueueTarget(
            remote=self.cluster.isChecked(),
            address=self.address.text().strip() or DEFAULT_ADDRESS,
            concurrency=self.concurrency.value(),
        )

    def accept(self) -> None:
        """OK: only with an address the cluster side can use; otherwise the dialog stays open and says why."""
        target = self.target()
        problem = remote.address_problem(target.address) if target.remote else None
        if problem is not None:
            self._show_result(False, problem, announce=False)
            self.address.setFocus()
            self.address.selectAll()
            return
        super().accept()

    def _update(self) -> None:
        remote_on = self.cluster.isChecked()
        self.address.setEnabled(remote_on)
        self.concurrency.setEnabled(remote_on)
        self.test.setEnabled(remote_on and (self._checker is None or self._checker.current is None))

    # -- Test connection --------------------------------------------------------------------------
    def test_connection(self) -> None:
        """Ask the cluster at the address (on a worker thread); the answer lands in the dialog."""
        if self._checker is not None and self._checker.current is not None:
            return
        address = self.address.text().strip() or DEFAULT_ADDRESS
        if self._checker is None:
            # Owned by the window, not the dialog: a test still running when the dialog closes
            # ends on its own, and the window stops it when it closes.
            self._checker = Runner(self.parent() or self)
        self._show_result(None, f"Connecting to {address}…")
        self._checker.submit(
            Task(
                "check-cluster",
                f"Testing the Ray cluster at {address}",
                partial(remote.check_task, address=address),
                on_done=partial(self._checked, address),
                on_error=lambda message, _details: self._failed(message),
            )
        )
        self._update()

    def _checked(self, address: str, info: object) -> None:
        if self._checker is not None:  # not after the dialog closed
            self._show_result(True, f"Connected to {address}: {remote.describe_info(info)}")

    def _failed(self, message: str) -> None:
        # The engine's ClusterError starts with the address; other failures name it in their title.
        if self._checker is not None:
            self._show_result(False, f"Could not connect: {message}")

    def _show_result(self, ok: bool | None, text: str, announce: bool = True) -> None:
        color = {True: colors.OK, False: colors.ERROR}.get(ok) if ok is not None else None
        mark = {True: "✓ ", False: "✗ "}.get(ok, "") if ok is not None else ""
        self.result_text = mark + text
        body = html.escape(self.result_text).replace("\n", "<br>")
        self.result_label.setText(f'<span style="color:{color}">{body}</span>' if color else body)
        # A longer answer must not squeeze the address hint: the dialog grows to fit.
        self.resize(self.size().expandedTo(self.minimumSizeHint()))
        self._update()
        if ok is not None and announce:  # a test's answer (not OK's refusal of an address)
            self.checked.emit(ok, text)

    def _stop_checker(self, *_args: object) -> None:
        """On close: never wait for a test still running (the GUI thread would freeze for it);
        its answer is dropped and its thread stopped once it ends (or when the window closes)."""
        checker, self._checker = self._checker, None
        if checker is None:
            return
        if checker.current is None:
            checker.shutdown(1_000)
        else:
            checker.busy_changed.connect(lambda busy: None if busy else checker.shutdown(1_000))
