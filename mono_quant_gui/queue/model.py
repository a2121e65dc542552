"""The queue as a table: one row per job, reordered by drag and drop (``moveRows`` and a private MIME type).

Every change that a restart must see (add, remove, reorder, status) is saved
to the attached :class:`~.store.QueueStore` at once; progress is not saved.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from PySide6.QtCore import QAbstractTableModel, QByteArray, QMimeData, QModelIndex, QPersistentModelIndex, Qt, Signal
from PySide6.QtGui import QColor

from mono_quant_core.jobs import Job
from mono_quant_gui.queue.entry import DONE, FAILED, QUEUED, RETRYABLE, RUNNING, QueueEntry, absolute_job, default_name
from mono_quant_gui.queue.store import QueueStore, QueueStoreError
from mono_quant_gui.window import colors

log = logging.getLogger("mono_quant_gui.queue")

COLUMNS = ("Name", "Checkpoint", "Output", "Host", "Status", "Progress", "Message")
NAME, CHECKPOINT, OUTPUT, HOST, STATUS, PROGRESS, MESSAGE = range(len(COLUMNS))
MIME_TYPE = "application/x-mono-quant-queue-rows"
ID_ROLE = Qt.ItemDataRole.UserRole + 1
STATUS_ROLE = Qt.ItemDataRole.UserRole + 2
PROGRESS_ROLE = Qt.ItemDataRole.UserRole + 3

_Index = QModelIndex | QPersistentModelIndex
_STATUS_COLORS = {FAILED: colors.ERROR, DONE: colors.OK}


class QueueModel(QAbstractTableModel):
    """The queued jobs in run order; ``problem(message)`` fires when saving the queue fails."""

    problem = Signal(str)

    def __init__(self, parent=None):
        super().__init__(parent)
        self._entries: list[QueueEntry] = []
        self._store: QueueStore | None = None

    def attach(self, store: QueueStore) -> str | None:
        """Show the jobs saved in ``store`` and save every later change there; returns the store's message."""
        entries, message = store.load()
        self.beginResetModel()
        self._entries = entries
        self.endResetModel()
        self._store = store
        return message

    # -- reading ----------------------------------------------------------------------------
    def entries(self) -> list[QueueEntry]:
        return list(self._entries)

    def entry(self, row: int) -> QueueEntry:
        return self._entries[row]

    def row_of(self, entry_id: str) -> int:
        """The row of the entry with ``entry_id``, or -1."""
        return next((i for i, e in enumerate(self._entries) if e.id == entry_id), -1)

    def find(self, entry_id: str) -> QueueEntry | None:
        row = self.row_of(entry_id)
        return self._entries[row] if row >= 0 else None

    def next_queued(self) -> QueueEntry | None:
        """The first queued job, in the order shown."""
        return next((e for e in self._entries if e.status == QUEUED), None)

    def counts(self) -> dict[str, int]:
        """How many jobs have each status."""
        result: dict[str, int] = {}
        for e in self._entries:
            result[e.status] = result.get(e.status, 0) + 1
        return result

    # -- changing ---------------------------------------------------------------------------
    def add_jobs(self, jobs: Iterable[Job], names: Iterable[str | None] | None = None) -> list[str]:
        """Append copies of ``jobs`` (paths made absolute) as queued; returns their ids.

        Raises ConfigError, before adding any, when a job cannot be written as a job file.
        """
        jobs = list(jobs)
        names = list(names) if names is not None else [None] * len(jobs)
        entries = []
        for job, name in zip(jobs, names, strict=True):
            job = absolute_job(job)
            job.to_toml()  # refuses what the queue file could not hold
            entries.append(QueueEntry(job=job, name=name or default_name(job)))
        if not entries:
            return []
        first = len(self._entries)
        self.beginInsertRows(QModelIndex(), first, first + len(entries) - 1)
        self._entries.extend(entries)
        self.endInsertRows()
        self._save()
        return [e.id for e in entries]

    def remove(self, ids: Iterable[str]) -> list[str]:
        """Remove the entries with these ids, except a running one; returns the ids removed."""
        removed = []
        for entry_id in set(ids):
            row = self.row_of(entry_id)
            if row < 0 or self._entries[row].status == RUNNING:
                continue
            self.beginRemoveRows(QModelIndex(), row, row)
            del self._entries[row]
            self.endRemoveRows()
            removed.append(entry_id)
        if removed:
            self._save()
        return removed

    def set_status(
        self, entry_id: str, status: str, message: str = "", details: str = "", progress: int | None = None
    ) -> None:
        """Change a job's status (saved) and its message, details and progress."""
        row = self.row_of(entry_id)
        if row < 0:
            return
        entry = self._entries[row]
        entry.status, entry.message, entry.details = status, message, details
        if progress is not None:
            entry.progress = progress
        self._changed(row)
        self._save()

    def set_progress(self, entry_id: str, percent: int, message: str | None = None) -> None:
        """Update a running job's progress bar and message (not saved)."""
        row = self.row_of(entry_id)
        if row < 0:
            return
        entry = self._entries[row]
        entry.progress = max(0, min(100, int(percent)))
        if message is not None:
            entry.message = message
        self._changed(row)

    def set_host(self, entry_id: str, host: str) -> None:
        """Say where a job runs (saved with its next status change)."""
        row = self.row_of(entry_id)
        if row < 0:
            return
        self._entries[row].host = host
        self._changed(row)

    def reset(self, ids: Iterable[str]) -> list[str]:
        """Put failed or cancelled jobs back in the queue; returns the ids reset."""
        done = []
        for entry_id in ids:
            row = self.row_of(entry_id)
            if row >= 0 and self._entries[row].status in RETRYABLE:
                entry = self._entries[row]
                entry.status, entry.message, entry.details, entry.progress, entry.host = QUEUED, "", "", 0, ""
                self._changed(row)
                done.append(entry_id)
        if done:
            self._save()
        return done

    def move_ids(self, ids: Iterable[str], row: int) -> bool:
        """Move the entries with ``ids`` (kept in their current order) to sit before ``row``."""
        rows = sorted(r for r in (self.row_of(i) for i in ids) if r >= 0)
        moving = [self._entries[r].id for r in rows]
        target = max(0, min(row, len(self._entries)))
        moved = False
        for entry_id in moving:
            source = self.row_of(entry_id)
            moved |= self._move(source, 1, target)
            if source >= target:
                target += 1
        if moved:
            self._save()
        return moved

    def moveRows(
        self, sourceParent: _Index, sourceRow: int, count: int, destinationParent: _Index, destinationChild: int
    ) -> bool:
        if sourceParent.isValid() or destinationParent.isValid():
            return False
        moved = self._move(sourceRow, count, destinationChild)
        if moved:
            self._save()
        return moved

    def _move(self, source: int, count: int, dest: int) -> bool:
        n = len(self._entries)
        if count < 1 or source < 0 or source + count > n or not 0 <= dest <= n or source <= dest <= source + count:
            return False
        if not self.beginMoveRows(QModelIndex(), source, source + count - 1, QModelIndex(), dest):
            return False
        block = self._entries[source : source + count]
        del self._entries[source : source + count]
        at = dest - count if dest > source else dest
        self._entries[at:at] = block
        self.endMoveRows()
        return True

    def _changed(self, row: int) -> None:
        self.dataChanged.emit(self.index(row, 0), self.index(row, len(COLUMNS) - 1))

    def _save(self) -> None:
        if self._store is None:
            return
        try:
            self._store.save(self._entries)
        except QueueStoreError as exc:
            log.error("%s", exc)
            self.problem.emit(str(exc))

    # -- Qt's table interface ---------------------------------------------------------------------
    def rowCount(self, parent: _Index = QModelIndex()) -> int:
        return 0 if parent.isValid() else len(self._entries)

    def columnCount(self, parent: _Index = QModelIndex()) -> int:
        return 0 if parent.isValid() else len(COLUMNS)

    def headerData(self, section: int, orientation: Qt.Orientation, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if orientation == Qt.Orientation.Horizontal and role == Qt.ItemDataRole.DisplayRole:
            return COLUMNS[section]
        return None

    def flags(self, index: _Index) -> Qt.ItemFlag:
        if not index.isValid():
            return Qt.ItemFlag.ItemIsDropEnabled  # drops land between rows, never on one
        return Qt.ItemFlag.ItemIsEnabled | Qt.ItemFlag.ItemIsSelectable | Qt.ItemFlag.ItemIsDragEnabled

    def data(self, index: _Index, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if not index.isValid() or not 0 <= index.row() < len(self._entries):
            return None
        e, col = self._entries[index.row()], index.column()
        if role == Qt.ItemDataRole.DisplayRole:
            return _display(e, col)
        if role == Qt.ItemDataRole.ToolTipRole:
            return _tooltip(e, col)
        if role == Qt.ItemDataRole.ForegroundRole and col == STATUS and e.status in _STATUS_COLORS:
            return QColor(_STATUS_COLORS[e.status])
        if role == ID_ROLE:
            return e.id
        if role == STATUS_ROLE:
            return e.status
        if role == PROGRESS_ROLE:
            return e.progress
        return None

    def supportedDropActions(self) -> Qt.DropAction:
        return Qt.DropAction.MoveAction

    def supportedDragActions(self) -> Qt.DropAction:
        return Qt.DropAction.MoveAction

    def mimeTypes(self) -> list[str]:
        return [MIME_TYPE]

    def mimeData(self, indexes: list[QModelIndex]) -> QMimeData:
        rows = sorted({i.row() for i in indexes if i.isValid()})
        mime = QMimeData()
        mime.setData(MIME_TYPE, QByteArray(json.dumps([self._entries[r].id for r in rows]).encode()))
        return mime

    def dropMimeData(self, data: QMimeData, action: Qt.DropAction, row: int, column: int, parent: _Index) -> bool:
        if not data.hasFormat(MIME_TYPE) or action not in (Qt.DropAction.MoveAction, Qt.DropAction.IgnoreAction):
            return False
        if action == Qt.DropAction.IgnoreAction:
            return True
        try:
            ids = json.loads(bytes(data.data(MIME_TYPE).data()).decode())
        except (UnicodeDecodeError, json.JSONDecodeError):
            return False
        if row < 0:
            row = parent.row() if parent.isValid() else len(self._entries)
        self.move_ids([i for i in ids if isinstance(i, str)], row)
        return True


def _display(e: QueueEntry, col: int) -> str:
    if col == NAME:
        return e.name
    if col == CHECKPOINT:
        return Path(e.job.checkpoint).name if e.job.checkpoint else "—"
    if col == OUTPUT:
        return Path(e.job.output).name
    if col == HOST:
        return e.host
    if col == STATUS:
        return e.status
    if col == PROGRESS:
        return "" if e.status == QUEUED else f"{e.progress} %"
    return e.message.splitlines()[0] if e.message else ""


def _tooltip(e: QueueEntry, col: int) -> str:
    if col == CHECKPOINT:
        return e.job.checkpoint or "No checkpoint: the script's factory loads the weights"
    if col == OUTPUT:
        return e.job.output
    if col == HOST:
        return f"Ran on {e.host}" if e.host else "Not run yet"
    if e.message:
        return e.message
    return f"{e.name}: {e.job.config.dtype} {e.job.config.mode}, script {e.job.script}"
