"""The calibration pane: the chosen folder, a table of its files and the dry run of the first sample."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QAction
from PySide6.QtWidgets import (
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QPushButton,
    QStackedWidget,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from . import colors
from .empty_state import EmptyState
from .formatting import format_bytes

_COLUMNS = ("File", "Tensor", "Shape", "Dtype", "Range", "Size")
#: Rows shown in the table; the summary line counts the rest.
MAX_ROWS = 500


def _range(row: dict[str, Any]) -> str:
    if row["min"] is None:
        return ""
    return f"{row['min']:.3g} … {row['max']:.3g}"


class CalibrationPanel(QWidget):
    """Folder line + preview; ``clear_requested`` when the user removes the folder."""

    clear_requested = Signal()

    def __init__(self, choose_action: QAction, parent: QWidget | None = None):
        super().__init__(parent)
        self.setObjectName("calibration_panel")
        self.folder = QLabel(objectName="calibration_folder")
        self.folder.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.folder.setWordWrap(True)
        choose = QPushButton("Choose…")
        choose.setToolTip(choose_action.toolTip())
        choose.clicked.connect(choose_action.trigger)
        self.clear_button = QPushButton("Clear")
        self.clear_button.setToolTip("Run without calibration data (static mode needs it)")
        self.clear_button.clicked.connect(self.clear_requested)
        top = QHBoxLayout()
        top.addWidget(self.folder, 1)
        top.addWidget(choose)
        top.addWidget(self.clear_button)
        self.summary = QLabel(objectName="calibration_summary")
        self.summary.setWordWrap(True)
        self.dry_run = QLabel(objectName="dry_run")
        self.dry_run.setWordWrap(True)
        self.dry_run.setTextFormat(Qt.TextFormat.PlainText)
        self.table = QTableWidget(0, len(_COLUMNS), objectName="calibration_table")
        self.table.setHorizontalHeaderLabels(list(_COLUMNS))
        self.table.verticalHeader().hide()
        self.table.setEditTriggers(QTableWidget.EditTrigger.NoEditTriggers)
        self.table.setSelectionBehavior(QTableWidget.SelectionBehavior.SelectRows)
        # The short columns fit their contents; the file name takes the room left (elided, its tooltip
        # has it whole), so Range and Size stay in view in a narrow pane.
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        header.setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        header.setStretchLastSection(False)
        self.table.setWordWrap(False)
        self.table.verticalHeader().setDefaultSectionSize(self.table.fontMetrics().height() + 6)
        self.hint = EmptyState(
            "No calibration data",
            "Drop a folder of .pt, .safetensors, .npy or .npz samples on the window, or choose one "
            "(Ctrl+L). Static mode needs it; the other modes use it to measure output SQNR.",
            [choose_action],
        )
        self.stack = QStackedWidget()
        details = QWidget()
        dl = QVBoxLayout(details)
        dl.setContentsMargins(0, 0, 0, 0)
        dl.addWidget(self.summary)
        dl.addWidget(self.dry_run)
        dl.addWidget(self.table, 1)
        self.stack.addWidget(self.hint)
        self.stack.addWidget(details)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(6, 6, 6, 6)
        layout.addLayout(top)
        layout.addWidget(self.stack, 1)
        self.set_folder(None)

    def set_folder(self, folder: str | None) -> None:
        """Show the chosen folder (None: none); the preview follows from the worker."""
        self.folder.setText(
            f"<b>{Path(folder).name}</b><br><small>{folder}</small>" if folder else "<i>No folder chosen</i>"
        )
        self.clear_button.setEnabled(folder is not None)
        self.table.setRowCount(0)
        self._set_summary("Reading the folder…" if folder else "", None)
        self.dry_run.setText("")
        self.stack.setCurrentIndex(1 if folder else 0)

    def show_preview(self, preview: Any) -> None:
        """Fill the table from a CalibrationPreview and show its dry-run result."""
        rows = preview.to_rows()
        self.table.setUpdatesEnabled(False)
        self.table.setRowCount(min(len(rows), MAX_ROWS))
        for r, row in enumerate(rows[:MAX_ROWS]):
            shape = "" if row["shape"] is None else "×".join(str(d) for d in row["shape"]) or "scalar"
            cells = (
                row["file"],
                row["key"] or ("(kwargs)" if row["passed_as"] == "keywords" else ""),
                shape,
                row["dtype"] or "",
                _range(row),
                format_bytes(row["bytes"]),
            )
            if row["error"]:
                cells = (row["file"], "", "", "", row["error"], format_bytes(row["bytes"]))
            for c, text in enumerate(cells):
                item = QTableWidgetItem(text)
                if row["error"]:
                    item.setForeground(Qt.GlobalColor.red)
                    item.setToolTip(row["error"])
                elif c == 0:
                    item.setToolTip(text)
                self.table.setItem(r, c, item)
        # A folder of lone tensors has no keys: the Tensor column would stay empty.
        self.table.setColumnHidden(1, all(not row["key"] and row["passed_as"] != "keywords" for row in rows))
        self.table.setUpdatesEnabled(True)
        more = f" (table shows the first {MAX_ROWS} rows)" if len(rows) > MAX_ROWS else ""
        capped = f", first {len(preview.files)} read" if preview.capped else ""
        summary = f"{preview.selected} of {preview.file_count} files used{capped}{more}"
        bad = [f.name for f in preview.files if f.error]
        if bad:  # a run reads every file: one it cannot use stops it, wherever its row is in the table
            listed = ", ".join(bad[:3]) + (f" and {len(bad) - 3} more" if len(bad) > 3 else "")
            summary += f"\n✗ {len(bad)} file{'s' if len(bad) > 1 else ''} cannot be used: {listed}"
        self._set_summary(summary, colors.ERROR if bad else None)
        if preview.dry_run_error:
            self._set_dry_run(f"✗ Dry run failed: {preview.dry_run_error}", colors.ERROR)
        elif preview.dry_run_structure:
            outs = ", ".join(
                f"{k or 'output'} {list(s) if s is not None else ''} {d}".replace("  ", " ")
                for k, s, d in preview.dry_run_outputs[:4]
            )
            self._set_dry_run(f"✓ Dry run of the first sample: {preview.dry_run_structure} → {outs}", colors.OK)
        else:
            self._set_dry_run("Open a model to dry-run the first sample through it.", None)

    def show_error(self, message: str) -> None:
        """The folder could not be read at all (missing, empty)."""
        self.table.setRowCount(0)
        self._set_summary("", None)
        self._set_dry_run(f"✗ {message}", colors.ERROR)

    def _set_summary(self, text: str, color: str | None) -> None:
        self.summary.setText(text)
        self.summary.setStyleSheet(f"color: {color};" if color else "")

    def _set_dry_run(self, text: str, color: str | None) -> None:
        self.dry_run.setText(text)
        self.dry_run.setStyleSheet(f"color: {color};" if color else "color: palette(placeholder-text);")
