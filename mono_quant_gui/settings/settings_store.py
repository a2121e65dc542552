"""What the window remembers between sessions, kept with QSettings.

Keys: ``recent/<kind>`` (lists of paths, newest first), ``window/geometry``,
``window/state`` (dock layout), ``quant/settings`` (the settings panel as
JSON), ``paths/last_folder`` (where file dialogs open), ``paths/save_folder``
(where the last Save As wrote), ``queue/remote``, ``queue/ray_address`` and
``queue/concurrency`` (where the queue runs its jobs: Preferences → Queue).
Tests point QSettings at a temporary folder.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from PySide6.QtCore import QByteArray, QSettings

from mono_quant_gui.queue.target import DEFAULT_ADDRESS, MAX_CONCURRENCY, QueueTarget

RECENT_KINDS = ("script", "checkpoint", "calibration")
MAX_RECENT = 10
#: Bump when the dock layout changes incompatibly; restoreState ignores other versions.
STATE_VERSION = 1


class SettingsStore:
    """A thin typed layer over QSettings (the application's org and name choose the file)."""

    def __init__(self) -> None:
        self.qs = QSettings()

    def recent(self, kind: str) -> list[str]:
        value = self.qs.value(f"recent/{kind}", [])
        if isinstance(value, str):  # QSettings returns a lone string for a one-item list
            value = [value]
        return [str(v) for v in (value or []) if v]

    def add_recent(self, kind: str, path: str) -> list[str]:
        """Put ``path`` first in the ``kind`` list; returns the new list."""
        path = str(Path(path).resolve())
        items = [path] + [p for p in self.recent(kind) if p != path]
        items = items[:MAX_RECENT]
        self.qs.setValue(f"recent/{kind}", items)
        return items

    def clear_recent(self) -> None:
        for kind in RECENT_KINDS:
            self.qs.remove(f"recent/{kind}")
        self.qs.remove("recent/checkpoint_of")

    def add_recent_model(self, script: str, checkpoint: str | None) -> None:
        """A model that loaded: its script first in the list, reopened with ``checkpoint``."""
        self.add_recent("script", script)
        pairs = self.recent_checkpoints()
        key = str(Path(script).resolve())
        if checkpoint:
            pairs[key] = str(Path(checkpoint).resolve())
            self.add_recent("checkpoint", checkpoint)
        else:
            pairs.pop(key, None)
        kept = set(self.recent("script"))
        self.qs.setValue("recent/checkpoint_of", json.dumps({k: v for k, v in pairs.items() if k in kept}))

    def recent_checkpoints(self) -> dict[str, str]:
        """``{script: the checkpoint it last loaded with}`` for the recent scripts."""
        try:
            value = json.loads(str(self.qs.value("recent/checkpoint_of", "{}")))
        except json.JSONDecodeError:
            return {}
        return {str(k): str(v) for k, v in value.items()} if isinstance(value, dict) else {}

    def geometry(self) -> QByteArray | None:
        value = self.qs.value("window/geometry")
        return value if isinstance(value, QByteArray) and not value.isEmpty() else None

    def window_state(self) -> QByteArray | None:
        value = self.qs.value("window/state")
        return value if isinstance(value, QByteArray) and not value.isEmpty() else None

    def save_window(self, geometry: QByteArray, state: QByteArray) -> None:
        self.qs.setValue("window/geometry", geometry)
        self.qs.setValue("window/state", state)

    def quant_settings(self) -> dict[str, Any]:
        try:
            value = json.loads(str(self.qs.value("quant/settings", "{}")))
        except json.JSONDecodeError:
            return {}
        return value if isinstance(value, dict) else {}

    def save_quant_settings(self, values: dict[str, Any]) -> None:
        self.qs.setValue("quant/settings", json.dumps(values))

    def last_folder(self) -> str:
        folder = str(self.qs.value("paths/last_folder", "") or "")
        return folder if folder and Path(folder).is_dir() else str(Path.home())

    def set_last_folder(self, path: str) -> None:
        p = Path(path)
        self.qs.setValue("paths/last_folder", str(p if p.is_dir() else p.parent))

    def save_folder(self) -> str | None:
        """The folder the last Save As wrote to (None: never, or it is gone)."""
        folder = str(self.qs.value("paths/save_folder", "") or "")
        return folder if folder and Path(folder).is_dir() else None

    def set_save_folder(self, path: str) -> None:
        self.qs.setValue("paths/save_folder", str(Path(path).parent))

    def queue_target(self) -> QueueTarget:
        """Where the queue runs jobs; this computer unless Preferences chose a Ray cluster."""
        remote = str(self.qs.value("queue/remote", "false")).lower() in ("true", "1")
        address = str(self.qs.value("queue/ray_address", DEFAULT_ADDRESS) or DEFAULT_ADDRESS).strip()
        try:
            concurrency = int(str(self.qs.value("queue/concurrency", 0)))
        except ValueError:
            concurrency = 0
        return QueueTarget(remote, address or DEFAULT_ADDRESS, max(0, min(concurrency, MAX_CONCURRENCY)))

    def save_queue_target(self, target: QueueTarget) -> None:
        self.qs.setValue("queue/remote", target.remote)
        self.qs.setValue("queue/ray_address", target.address.strip() or DEFAULT_ADDRESS)
        self.qs.setValue("queue/concurrency", int(target.concurrency))

    def sync(self) -> None:
        self.qs.sync()
