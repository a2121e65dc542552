"""What a dropped or command-line path is: a model script, a checkpoint, a calibration folder or a job file."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QMimeData

from mono_quant_core.config import checkpoint_suffix


def classify(path: str) -> str | None:
    """``"script"``, ``"checkpoint"``, ``"calibration"`` (a folder), ``"job"`` (.toml) or None."""
    p = Path(path)
    name = p.name.lower()
    if p.is_dir():
        return "calibration"
    if name.endswith(".py"):
        return "script"
    if checkpoint_suffix(name) is not None:
        return "checkpoint"
    if name.endswith(".toml"):
        return "job"
    return None


def local_paths(mime: QMimeData) -> list[str]:
    """The local files and folders in drag-and-drop data."""
    if not mime.hasUrls():
        return []
    return [url.toLocalFile() for url in mime.urls() if url.isLocalFile() and url.toLocalFile()]


def sort_drop(paths: list[str]) -> dict[str, list[str]]:
    """Group paths by kind; paths of no known kind go under ``"unknown"``."""
    groups: dict[str, list[str]] = {}
    for path in paths:
        groups.setdefault(classify(path) or "unknown", []).append(path)
    return groups
