"""The queue panel's file dialogs, as module-level functions so tests can replace them."""

from __future__ import annotations

from PySide6.QtWidgets import QFileDialog, QWidget

from mono_quant_gui.window.dialogs import CHECKPOINT_FILTER

JOB_FILTER = "mono-quant job files (*.toml);;All files (*)"


def ask_job_files(parent: QWidget, folder: str) -> list[str]:
    """Job files to import (empty when cancelled)."""
    paths, _ = QFileDialog.getOpenFileNames(parent, "Import job files", folder, JOB_FILTER)
    return list(paths)


def ask_checkpoints(parent: QWidget, folder: str) -> list[str]:
    """Checkpoints to queue, one job each (empty when cancelled)."""
    paths, _ = QFileDialog.getOpenFileNames(parent, "Add checkpoints to the queue", folder, CHECKPOINT_FILTER)
    return list(paths)


def ask_export_file(parent: QWidget, suggested: str) -> str | None:
    """Where to write one job file (``.toml`` added when missing); None when cancelled."""
    path, _ = QFileDialog.getSaveFileName(parent, "Export job file", suggested, JOB_FILTER)
    if not path:
        return None
    return path if path.lower().endswith(".toml") else path + ".toml"


def ask_export_folder(parent: QWidget, folder: str) -> str | None:
    """The folder to write several job files into; None when cancelled."""
    return QFileDialog.getExistingDirectory(parent, "Export job files to folder", folder) or None
