"""The Queue pane: the job table (drag to reorder), its buttons, an empty-state hint and a details area.

The pane owns the queue's store, model and runner.  The main window supplies
jobs: it connects ``add_current_requested`` (and ``checkpoints_dropped``) and
answers with :meth:`QueueDock.add_jobs` / :meth:`QueueDock.add_checkpoints`;
it also tells the pane where jobs run (:meth:`QueueDock.set_target`, from
Preferences), which the line beside the buttons shows.
"""

from __future__ import annotations

import html
import logging
import os
from pathlib import Path

from PySide6.QtCore import QItemSelectionModel, QSize, Qt, Signal
from PySide6.QtGui import QAction, QDragEnterEvent, QDropEvent, QKeySequence
from PySide6.QtWidgets import (
    QHBoxLayout,
    QLabel,
    QPlainTextEdit,
    QSizePolicy,
    QSplitter,
    QStackedWidget,
    QToolBar,
    QVBoxLayout,
    QWidget,
)

from mono_quant_core.errors import MonoQuantError
from mono_quant_core.jobs import Job
from mono_quant_gui.queue import file_dialogs, remote
from mono_quant_gui.queue.entry import RETRYABLE, RUNNING, STATUSES, QueueEntry
from mono_quant_gui.queue.from_checkpoints import jobs_from_checkpoints
from mono_quant_gui.queue.job_files import export_entries, read_job_files
from mono_quant_gui.queue.model import ID_ROLE, QueueModel
from mono_quant_gui.queue.runner import QueueRunner
from mono_quant_gui.queue.store import QueueStore, QueueStoreError
from mono_quant_gui.queue.table import QueueTable
from mono_quant_gui.queue.target import QueueTarget
from mono_quant_gui.window.drop import local_paths
from mono_quant_gui.window.empty_state import EmptyState
from mono_quant_gui.window.icons import icon

log = logging.getLogger("mono_quant_gui.queue")

HINT_TITLE = "No jobs queued"
HINT_TEXT = "Add or drop checkpoints to queue one job each with the current settings, or add the current settings"


class QueueDock(QWidget):
    """The batch queue pane.

    Signals: ``add_current_requested()`` (the main window answers with
    ``add_jobs([job])``), ``checkpoints_dropped(paths)`` (checkpoints chosen
    with Add checkpoints…; it answers with ``add_checkpoints(paths,
    template_job)``), ``paths_dropped(paths)`` (whatever was dropped on the
    pane: the window's one drop router decides what each path is),
    ``message(text)`` for the status bar, ``preferences_requested()`` (the "runs on" line was
    clicked: the window opens Preferences).  ``restore_message`` says what happened when the saved
    queue was read (None: nothing to report).  ``cluster_factory``: see :class:`QueueRunner`.
    """

    add_current_requested = Signal()
    checkpoints_dropped = Signal(list)
    paths_dropped = Signal(list)
    message = Signal(str)
    preferences_requested = Signal()

    def __init__(
        self,
        store: QueueStore | None = None,
        parent: QWidget | None = None,
        cluster_factory: remote.ClusterFactory | None = None,
    ):
        super().__init__(parent)
        self.setObjectName("queue_panel")
        self.setAcceptDrops(True)
        self.model = QueueModel(self)
        try:
            self.store: QueueStore | None = store if store is not None else QueueStore()
        except QueueStoreError as exc:
            self.store = None  # the queue still works for this session, in memory
            self.restore_message: str | None = f"{exc}; the queue will not be saved"
        else:
            self.restore_message = self.model.attach(self.store)
        self.runner = QueueRunner(self.model, self, cluster_factory)
        #: What the "runs on" line adds after the target: the connected cluster's size, or a failure.
        self._target_note = ""
        self.last_folder = str(Path.home())
        #: (entry id, text) of the job the details area last showed; None when it shows no job's details.
        self._details_shown: tuple[str, str] | None = None
        self._make_actions()
        self._build()
        self._connect()
        if self.restore_message:
            log.warning("%s", self.restore_message)
            self.details.setPlainText(self.restore_message)
        self.update_state()

    # -- building ---------------------------------------------------------------------------
    def _make_actions(self) -> None:
        def make(name: str, text: str, tip: str, icon_name: str | None = None) -> QAction:
            action = QAction(text, self)
            action.setObjectName(f"queue_{name}")
            action.setToolTip(tip)
            action.setStatusTip(tip)
            if icon_name:
                action.setIcon(icon(icon_name))
            self.addAction(action)
            return action

        self.add_current = make(
            "add_current", "Add current settings", "Queue a job with the open model, checkpoint and settings", "queue"
        )
        self.add_checkpoints_action = make(
            "add_checkpoints",
            "Add checkpoints…",
            "Queue one job per checkpoint, with the open model and settings",
            "open-checkpoint",
        )
        self.import_jobs = make(
            "import", "Import job files…", "Queue jobs from mono-quant job files (.toml)", "open-script"
        )
        self.export_selected = make(
            "export", "Export selected…", "Write the selected jobs as job files (.toml)", "save"
        )
        self.remove_selected = make("remove", "Remove", "Remove the selected jobs (not a running one)", "clear")
        self.remove_selected.setShortcut(QKeySequence.StandardKey.Delete)
        self.remove_selected.setShortcutContext(Qt.ShortcutContext.WidgetWithChildrenShortcut)
        self.retry_selected = make("retry", "Retry", "Queue the selected failed or cancelled jobs again")
        self.run_all = make("run_all", "Run all", "Run the queued jobs one after another in the background", "quantize")
        self.stop = make("stop", "Stop", "Cancel the running jobs and run no more", "cancel")

    def _build(self) -> None:
        # A tool bar, not a row of buttons: in a narrow pane the last ones go to its » menu instead of
        # widening the pane (and the window's bottom dock area with it).
        tools = QToolBar(objectName="queue_tools")
        tools.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextBesideIcon)
        tools.setIconSize(QSize(16, 16))
        for action in (
            self.add_current,
            self.add_checkpoints_action,
            self.import_jobs,
            self.export_selected,
            self.remove_selected,
            self.retry_selected,
            self.run_all,
            self.stop,
        ):
            tools.addAction(action)
        self.tools = tools
        self.summary = QLabel(objectName="queue_summary")
        # One line under the buttons, shown only while jobs go to a cluster (this computer, the
        # default, needs no line); it never widens the pane: a long address is cut, the tooltip has it.
        self.target_label = QLabel()
        self.target_label.setObjectName("queue_target")
        self.target_label.setTextFormat(Qt.TextFormat.RichText)
        self.target_label.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Fixed)
        self.target_label.setContentsMargins(4, 0, 4, 2)
        # Beside it, the counts (the buttons' row then keeps its width for the buttons: with several
        # jobs running, "1 queued · 3 running · 2 done" would push Run all and Stop into the » menu).
        self.cluster_summary = QLabel()
        self.cluster_summary.setObjectName("queue_cluster_summary")
        self.cluster_summary.setContentsMargins(4, 0, 4, 2)
        self.target_row = QWidget()
        self.target_row.setObjectName("queue_target_row")
        row = QHBoxLayout(self.target_row)
        row.setContentsMargins(0, 0, 0, 0)
        row.addWidget(self.target_label, 1)
        row.addWidget(self.cluster_summary)
        buttons = QHBoxLayout()
        buttons.setContentsMargins(0, 0, 0, 0)
        buttons.addWidget(tools, 1)
        buttons.addWidget(self.summary)

        self.table = QueueTable(self.model)
        self.details = QPlainTextEdit(objectName="queue_details", readOnly=True)
        self.details.setPlaceholderText("Select a job to see its settings, or why it failed.")
        self.details.setMaximumBlockCount(2000)
        # Side by side: the pane sits in the window's low, wide bottom area, where the table keeps
        # its rows (at least MIN_ROWS) and the details their lines.
        split = QSplitter(Qt.Orientation.Horizontal, objectName="queue_split")
        split.addWidget(self.table)
        split.addWidget(self.details)
        split.setStretchFactor(0, 3)
        split.setStretchFactor(1, 2)
        split.setChildrenCollapsible(False)

        self.hint = EmptyState(HINT_TITLE, HINT_TEXT, [self.add_current, self.add_checkpoints_action, self.import_jobs])
        self.pages = QStackedWidget()
        self.pages.addWidget(self.hint)
        self.pages.addWidget(split)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.addLayout(buttons)
        layout.addWidget(self.target_row)
        layout.addWidget(self.pages, 1)

    def _connect(self) -> None:
        self.add_current.triggered.connect(self.add_current_requested)
        self.add_checkpoints_action.triggered.connect(self.choose_checkpoints)
        self.import_jobs.triggered.connect(self.choose_job_files)
        self.export_selected.triggered.connect(self.choose_export)
        self.remove_selected.triggered.connect(lambda: self.remove_ids(self.selected_ids()))
        self.retry_selected.triggered.connect(lambda: self.runner.retry(self.selected_ids()))
        self.run_all.triggered.connect(self.runner.run_all)
        self.stop.triggered.connect(self.runner.stop)
        m = self.model
        for signal in (m.rowsInserted, m.rowsRemoved, m.rowsMoved, m.modelReset, m.dataChanged):
            signal.connect(self.update_state)
        m.problem.connect(self._report)
        self.table.selectionModel().selectionChanged.connect(self.update_state)
        self.runner.running_changed.connect(self.update_state)
        self.runner.connected.connect(self._on_connected)
        self.runner.connect_failed.connect(self._on_connect_failed)
        self.runner.disconnected.connect(lambda: self._set_target_note(""))
        self.target_label.linkActivated.connect(lambda _link: self.preferences_requested.emit())
        self.runner.errored.connect(
            lambda _id, message, _details: self.message.emit(
                f"Queue job failed: {message.splitlines()[0] if message else ''}"
            )
        )

    # -- where jobs run ---------------------------------------------------------------------
    def set_target(self, target: QueueTarget) -> None:
        """Run the next jobs on ``target`` (this computer or a Ray cluster); running ones finish where they are."""
        if target != self.runner.target:
            self._target_note = ""
        self.runner.set_target(target)
        self.update_state()

    def _on_connected(self, info: object, concurrency: int) -> None:
        self._set_target_note(
            f"{remote.describe_info(info)}, {concurrency} job{'s' if concurrency != 1 else ''} at once"
        )

    def _on_connect_failed(self, text: str, details: str) -> None:
        self._set_target_note("not connected")
        self._report(text + (f"\n\n{details}" if details else ""))

    def _set_target_note(self, note: str) -> None:
        self._target_note = note
        self.update_state()

    def _update_target(self) -> None:
        target = self.runner.target
        address = target.cluster_address
        self.target_row.setVisible(address is not None)
        self.summary.setVisible(address is None)
        self.cluster_summary.setText(self.summary.text())
        if address is not None:
            note = f": {self._target_note}" if self._target_note else ""
            link = f'<a href="preferences">{html.escape(address)}</a>'
            self.target_label.setText(f"Queued jobs run on the Ray cluster at {link}{html.escape(note)}")
            self.target_label.setToolTip(
                f"Queued jobs run on {target.describe()}{note}. Click the address to change it in Preferences."
            )
        else:
            self.target_label.setText("")
        if target.remote:
            self.run_all.setToolTip(f"Run the queued jobs on {target.describe()}, several at once")
        else:
            self.run_all.setToolTip("Run the queued jobs one after another in the background")
        self.run_all.setStatusTip(self.run_all.toolTip())

    # -- adding jobs ------------------------------------------------------------------------
    def add_jobs(self, jobs: list[Job], names: list[str | None] | None = None, announce: bool = True) -> list[str]:
        """Queue ``jobs`` (copies are kept); returns their ids, [] with a message when one is refused."""
        try:
            ids = self.model.add_jobs(jobs, names)
        except MonoQuantError as exc:
            self._report(f"Not queued: {exc}")
            return []
        if ids and announce:
            self.message.emit(f"Queued {len(ids)} job(s)")
        return ids

    def add_checkpoints(self, paths: list[str], template_job: Job) -> list[str]:
        """One job per checkpoint with ``template_job``'s settings, output next to each checkpoint
        (numbered when a queued job or an existing file has that name)."""
        try:
            jobs = jobs_from_checkpoints(paths, template_job, taken=[e.job.output for e in self.model.entries()])
        except MonoQuantError as exc:
            self._report(f"Not queued: {exc}")
            return []
        return self.add_jobs(jobs)

    def import_files(self, paths: list[str]) -> list[str]:
        """Queue the jobs of these job files; unreadable ones are reported, the others queued."""
        jobs, names, errors = read_job_files(paths)
        ids = self.add_jobs(jobs, names, announce=not errors) if jobs else []
        if errors:
            self._report(
                f"Queued {len(ids)} job(s); {len(errors)} job file(s) could not be read:\n" + "\n".join(errors)
            )
        return ids

    def choose_checkpoints(self) -> None:
        """Checkpoints chosen in a dialog are announced like dropped ones (``checkpoints_dropped``)."""
        paths = file_dialogs.ask_checkpoints(self, self.last_folder)
        if paths:
            self.last_folder = os.path.dirname(paths[0])
            self.checkpoints_dropped.emit(paths)

    def choose_job_files(self) -> None:
        paths = file_dialogs.ask_job_files(self, self.last_folder)
        if paths:
            self.last_folder = os.path.dirname(paths[0])
            self.import_files(paths)

    # -- exporting and removing -------------------------------------------------------------
    def export_ids(self, ids: list[str], target: str) -> list[str]:
        """Write these jobs as job files (see :func:`export_entries`); returns the paths written."""
        entries = [e for e in (self.model.find(i) for i in ids) if e is not None]
        try:
            written = export_entries(entries, target)
        except MonoQuantError as exc:
            self._report(f"Export failed: {exc}")
            return []
        self.message.emit(
            f"Exported {len(written)} job file(s) to {os.path.dirname(written[0])}" if written else "Nothing exported"
        )
        return written

    def choose_export(self) -> None:
        ids = self.selected_ids()
        if not ids:
            return
        if len(ids) == 1:
            entry = self.model.find(ids[0])
            target = file_dialogs.ask_export_file(self, os.path.join(self.last_folder, f"{entry.name}.toml"))
        else:
            target = file_dialogs.ask_export_folder(self, self.last_folder)
        if target:
            self.last_folder = target if os.path.isdir(target) else os.path.dirname(target)
            self.export_ids(ids, target)

    def remove_ids(self, ids: list[str]) -> list[str]:
        """Remove these jobs (a running one stays: stop it first)."""
        removed = self.model.remove(ids)
        if len(removed) < len(set(ids)):
            self.message.emit("Running jobs were kept: stop them first to remove them")
        return removed

    # -- state ------------------------------------------------------------------------------
    def selected_ids(self) -> list[str]:
        """Ids of the selected jobs, in queue order."""
        rows = sorted({i.row() for i in self.table.selectionModel().selectedRows()})
        return [self.model.index(r, 0).data(ID_ROLE) for r in rows]

    def select_ids(self, ids: list[str]) -> None:
        """Select these jobs (replacing the selection)."""
        selection = self.table.selectionModel()
        selection.clearSelection()
        flags = QItemSelectionModel.SelectionFlag.Select | QItemSelectionModel.SelectionFlag.Rows
        for entry_id in ids:
            row = self.model.row_of(entry_id)
            if row >= 0:
                selection.select(self.model.index(row, 0), flags)

    def update_state(self, *_args) -> None:
        """Enable the buttons that apply, switch hint/table, refresh the summary and the details."""
        entries = self.model.entries()
        selected = [e for e in (self.model.find(i) for i in self.selected_ids()) if e is not None]
        running = self.runner.running
        self.pages.setCurrentIndex(1 if entries else 0)
        self.export_selected.setEnabled(bool(selected))
        self.remove_selected.setEnabled(any(e.status != RUNNING for e in selected))
        self.retry_selected.setEnabled(any(e.status in RETRYABLE for e in selected))
        self.run_all.setEnabled(not running and self.model.next_queued() is not None)
        self.stop.setEnabled(running)
        counts = self.model.counts()
        self.summary.setText(" · ".join(f"{counts[s]} {s}" for s in STATUSES if counts.get(s)))
        self._update_target()
        self._show_details(selected[0] if len(selected) == 1 else None)

    def _show_details(self, entry: QueueEntry | None) -> None:
        """Show ``entry``'s details when the selection or what they say changed, never on a mere
        progress update: rewriting the text would move a traceback being read back to the top."""
        if entry is None:
            self._details_shown = None  # the text stays; a later single selection shows its job again
            return
        text = _details_text(entry)
        if self._details_shown == (entry.id, text):
            return
        self._details_shown = (entry.id, text)
        if self.details.toPlainText() != text:
            self.details.setPlainText(text)

    def _report(self, text: str) -> None:
        log.warning("%s", text)
        self.details.setPlainText(text)
        self.message.emit(text.splitlines()[0])

    # -- drops and closing --------------------------------------------------------------------
    # The pane only reports what was dropped (``paths_dropped``); the window's drop router
    # decides what each path is and what happens to it.
    def dragEnterEvent(self, event: QDragEnterEvent) -> None:
        if local_paths(event.mimeData()):
            event.acceptProposedAction()

    def dropEvent(self, event: QDropEvent) -> None:
        paths = local_paths(event.mimeData())
        if paths:
            event.acceptProposedAction()
            self.paths_dropped.emit(paths)

    def shutdown(self, timeout_ms: int = 10_000) -> bool:
        """Stop the queue's threads (running jobs are saved as queued), disconnect from a cluster and
        release the queue file."""
        stopped = self.runner.shutdown(timeout_ms)
        if self.store is not None:
            self.store.close()
        return stopped


def _details_text(e: QueueEntry) -> str:
    job = e.job
    lines = [f"{e.name}: {e.status}"]
    if e.message:
        lines += ["", e.message]
    lines += [
        "",
        f"script      {job.script}" + (f" (entry {job.entry})" if job.entry else ""),
        f"checkpoint  {job.checkpoint or '—'}",
        f"calibration {job.calibration_folder or '—'}",
        f"output      {job.output}",
        *([f"host        {e.host}"] if e.host else []),
        f"settings    {job.config.dtype}, {job.config.mode}, {job.config.scheme}, {job.config.granularity}",
    ]
    if e.details:
        lines += ["", e.details]
    return "\n".join(lines)
