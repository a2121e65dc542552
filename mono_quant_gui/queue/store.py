"""The queue on disk: ``queue.json`` in the user's data folder, rewritten atomically on every change.

The file is ``{"format": "mono-quant-queue", "version": 1, "jobs": [...]}``; each
job holds ``id``, ``name``, ``status``, ``message``, ``details``, ``host`` (where
it last ran; optional) and ``job``, the job file's TOML text with absolute paths.
A job that was running, here or on a Ray cluster, comes back queued.  A lock file next to it keeps a
second window of the application from overwriting the first one's queue.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import time
import uuid
from typing import Any

from PySide6.QtCore import QLockFile, QStandardPaths

from mono_quant_core.errors import ConfigError, MonoQuantError
from mono_quant_core.jobs import parse_job
from mono_quant_gui.queue.entry import DONE, QUEUED, RUNNING, STATUSES, QueueEntry

FILE_NAME = "queue.json"
FORMAT = "mono-quant-queue"
VERSION = 1
INTERRUPTED = "interrupted: mono-quant stopped while this job ran, so it is queued again"


class QueueStoreError(MonoQuantError):
    """The queue file could not be written (the message names the file and the reason)."""


class _Corrupt(Exception):
    """The whole queue file is unreadable; the message says why."""


def default_queue_path() -> str:
    """``<AppDataLocation>/queue.json`` (tests point QStandardPaths at a temporary folder)."""
    folder = QStandardPaths.writableLocation(QStandardPaths.StandardLocation.AppDataLocation)
    if not folder:
        raise QueueStoreError(f"{FILE_NAME}: the system reports no data folder (AppDataLocation) for the queue")
    return os.path.join(folder, FILE_NAME)


class QueueStore:
    """Reads and writes one queue file; ``load()`` never raises, ``save()`` raises QueueStoreError."""

    def __init__(self, path: str | os.PathLike | None = None):
        self.path = os.fspath(path) if path is not None else default_queue_path()
        try:
            os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
        except OSError as exc:
            raise QueueStoreError(f"{self.path}: cannot create the queue's folder: {exc.strerror or exc}") from exc
        self._lock = QLockFile(self.path + ".lock")
        # 0: a lock is stale only when its process is gone, however long the app has been open.
        self._lock.setStaleLockTime(0)
        #: False when another running instance holds the queue: this one then never writes it.
        self.owner = self._lock.tryLock(0)

    def close(self) -> None:
        """Give up the lock (the application is closing)."""
        if self.owner:
            self._lock.unlock()
            self.owner = False

    # -- reading ----------------------------------------------------------------------------
    def load(self) -> tuple[list[QueueEntry], str | None]:
        """The saved entries (a running one comes back queued) and a message for the user, or None."""
        notes = (
            []
            if self.owner
            else [f"{self.path}: the queue is open in another mono-quant window; changes made here will not be saved"]
        )
        try:
            with open(self.path, "rb") as f:
                raw = f.read()
        except FileNotFoundError:
            return [], _joined(notes)
        except OSError as exc:
            return [], _joined([*notes, f"{self.path}: cannot read the queue: {exc.strerror or exc}"])
        try:
            entries, problems, interrupted = _decode(raw, os.path.dirname(os.path.abspath(self.path)))
        except _Corrupt as exc:
            return [], _joined([*notes, f"{self.path}: {exc}; {self._move_aside()}, the queue starts empty"])
        if problems:
            kept = self._move_aside()
            notes.append(
                f"{self.path}: {len(problems)} job(s) could not be read and were left out "
                f"({kept}): " + "; ".join(problems)
            )
        if interrupted:
            notes.append(f"{interrupted} job(s) stopped when mono-quant stopped and are queued again")
        if (problems or interrupted) and self.owner:
            try:
                self.save(entries)  # the file now says what the window shows
            except QueueStoreError as exc:
                notes.append(str(exc))
        return entries, _joined(notes)

    def _move_aside(self) -> str:
        """Rename the file to ``queue.json.corrupt-<timestamp>``; says what happened, for the message."""
        if not self.owner:
            return "the file is left as it is (another window holds the queue)"
        stamp = time.strftime("%Y%m%d-%H%M%S")
        aside, n = f"{self.path}.corrupt-{stamp}", 1
        while os.path.exists(aside):
            aside, n = f"{self.path}.corrupt-{stamp}-{n}", n + 1
        try:
            os.replace(self.path, aside)
        except OSError as exc:
            return f"it could not be moved aside ({exc.strerror or exc})"
        return f"the file was moved aside to {aside}"

    # -- writing ----------------------------------------------------------------------------
    def save(self, entries: list[QueueEntry]) -> None:
        """Write every entry (atomically: a temporary file in the same folder, then ``os.replace``)."""
        if not self.owner:
            return
        data = {"format": FORMAT, "version": VERSION, "jobs": [_encode(e) for e in entries]}
        text = json.dumps(data, indent=1, ensure_ascii=False)
        folder, name = os.path.split(os.path.abspath(self.path))
        tmp = os.path.join(folder, f".{name}.{secrets.token_hex(4)}.tmp")
        try:
            with open(tmp, "w", encoding="utf-8", newline="\n") as f:
                f.write(text)
                f.flush()
                os.fsync(f.fileno())  # the rename must not land before the data after a power loss
            os.replace(tmp, self.path)
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.remove(tmp)
            raise QueueStoreError(f"{self.path}: cannot save the queue: {exc.strerror or exc}") from exc


def _joined(notes: list[str]) -> str | None:
    return "\n".join(notes) if notes else None


def _encode(entry: QueueEntry) -> dict[str, Any]:
    return {
        "id": entry.id,
        "name": entry.name,
        "status": entry.status,
        "message": entry.message,
        "details": entry.details,
        "host": entry.host,
        "job": entry.job.to_toml(),
    }


def _decode(raw: bytes, base_dir: str) -> tuple[list[QueueEntry], list[str], int]:
    """Entries, one problem per job that could not be read, and how many were running; _Corrupt when
    nothing can be read."""
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise _Corrupt(f"not a queue file (not JSON: {exc})") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT or not isinstance(data.get("jobs"), list):
        raise _Corrupt(f'not a queue file (expected {{"format": "{FORMAT}", "jobs": [...]}})')
    version = data.get("version")
    if not isinstance(version, int) or isinstance(version, bool) or not 1 <= version <= VERSION:
        raise _Corrupt(f"queue format version {version!r} is not supported (this mono-quant reads {VERSION})")
    entries: list[QueueEntry] = []
    problems: list[str] = []
    seen: set[str] = set()
    interrupted = 0
    for i, record in enumerate(data["jobs"], start=1):
        try:
            entry = _entry(record, base_dir, i)
        except (ConfigError, _Corrupt) as exc:
            problems.append(str(exc))
            continue
        if entry.id in seen:
            entry.id = uuid.uuid4().hex
        seen.add(entry.id)
        entries.append(entry)
        interrupted += record["status"] == RUNNING
    return entries, problems, interrupted


def _entry(record: Any, base_dir: str, number: int) -> QueueEntry:
    where = f"job {number}"
    if not isinstance(record, dict):
        raise _Corrupt(f"{where}: not a JSON object")
    fields = {key: record.get(key, "") for key in ("id", "name", "status", "message", "details", "host", "job")}
    for key, value in fields.items():
        if not isinstance(value, str):
            raise _Corrupt(f"{where}: {key} must be a string, got {value!r}")
    if fields["status"] not in STATUSES:
        raise _Corrupt(f"{where}: status {fields['status']!r} is not one of {', '.join(STATUSES)}")
    job = parse_job(fields["job"], base_dir, f"{where} ({fields['name'] or 'unnamed'})")
    entry = QueueEntry(
        job=job,
        name=fields["name"] or os.path.basename(job.output),
        status=fields["status"],
        message=fields["message"],
        details=fields["details"],
        host=fields["host"],
        id=fields["id"] or uuid.uuid4().hex,
    )
    if entry.status == RUNNING:  # here or on a cluster: it runs again from the start
        entry.status, entry.message, entry.details, entry.host = QUEUED, INTERRUPTED, "", ""
    entry.progress = 100 if entry.status == DONE else 0
    return entry
