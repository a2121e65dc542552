"""File ▸ Export Layer Table…: the per-layer results of the report on screen as a CSV file.

The rows come from the engine (``mono_quant_core.report_csv``, torch-free); the
file is written next to its final name and moved over it, so a reader never
sees half a table and a failed write leaves any earlier file whole.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path
from typing import TYPE_CHECKING

from mono_quant_core.errors import ConfigError
from mono_quant_gui.queue.from_checkpoints import checkpoint_stem, output_folder
from mono_quant_gui.window import dialogs

if TYPE_CHECKING:
    from mono_quant_gui.window.main_window import MainWindow


def write_atomically(path: str, text: str) -> None:
    """``text`` into ``path`` through a temporary file in the same folder and ``os.replace``."""
    folder, name = os.path.split(os.path.abspath(path))
    temp = os.path.join(folder, f".{name}.{secrets.token_hex(4)}.tmp")
    # os.open with 0o666 lets the umask decide the mode, as a plain open() would (mkstemp: 0600).
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:  # the csv module writes its own \r\n
            f.write(text)
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(temp)
        raise


def suggested_csv_path(window: MainWindow) -> str:
    """``<checkpoint stem>.layers.csv`` next to the checkpoint (or script) when that folder is the user's
    and writable, else in Documents (the demo's folder is the application's own)."""
    script, checkpoint = window.session.shown_inputs()
    source = checkpoint or script or "model"
    try:
        stem = checkpoint_stem(source) if checkpoint else Path(source).stem
    except ConfigError:
        stem = Path(source).stem
    return os.path.join(output_folder(source), f"{stem}.layers.csv")


def export_layer_table(window: MainWindow) -> str | None:
    """Ask where, and write the report's per-layer table; the path written, or None."""
    import mono_quant_core as mq

    report = window.session.report
    if report is None:
        return None
    path = dialogs.ask_csv_path(window, suggested_csv_path(window))
    if not path:
        return None
    if not Path(path).suffix:
        path += ".csv"
        if os.path.exists(path) and not dialogs.confirm_overwrite(window, path):
            return None
    try:
        write_atomically(path, mq.report_csv(report))
    except OSError as exc:
        window.last_error = dialogs.show_error(window, "Could not export the layer table", f"{path}: {exc}")
        return None
    n = len(report.layers)
    window.statusBar().showMessage(f"Exported {n} layer{'s' if n != 1 else ''} to {Path(path).name}")
    return path
