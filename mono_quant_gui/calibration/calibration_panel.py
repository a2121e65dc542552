"""The calibration pane: the chosen folder, a table of its files (each marked usable, unusable with the
reason, or skipped), a count that a run would use, the dry run, and whether to skip unusable files."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from PySide6.QtCore import QModelIndex, QPersistentModelIndex, QSize, Qt, Signal
from PySide6.QtGui import QAction, QColor
from PySide6.QtWidgets import (
    QCheckBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QPushButton,
    QSizePolicy,
    QStackedWidget,
    QStyledItemDelegate,
    QStyleOptionViewItem,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from mono_quant_gui.window import colors
from mono_quant_gui.window.empty_state import EmptyState
from mono_quant_gui.window.formatting import format_bytes

_COLUMNS = ("File", "Tensor", "Shape", "Dtype", "Range", "Size")
FILE, TENSOR, RANGE, SIZE = 0, 1, 4, 5
#: Where a file's status goes when it is not a sample (it cannot be used, or it is skipped): over Tensor … Range.
NOTE = TENSOR
#: Rows shown in the table; the summary line counts the rest.
MAX_ROWS = 500
SKIP_LABEL = "Skip files that cannot be used"
NO_USABLE = "The calibration folder has no usable files"
#: A note spanning Tensor … Range (why a file is not a sample): it takes the room those columns have, never widens them.
_SPANNED = Qt.ItemDataRole.UserRole + 1


def _range(row: dict[str, Any]) -> str:
    if row["min"] is None:
        return ""
    return f"{row['min']:.3g} … {row['max']:.3g}"


class _SpanDelegate(QStyledItemDelegate):
    """Spanned notes claim no width: Qt sizes a column to a spanned cell's whole text otherwise."""

    def sizeHint(self, option: QStyleOptionViewItem, index: QModelIndex | QPersistentModelIndex) -> QSize:
        hint = super().sizeHint(option, index)
        return QSize(0, hint.height()) if index.data(_SPANNED) else hint


class CalibrationPanel(QWidget):
    """Folder line + preview; ``clear_requested`` when the user removes the folder, ``skip_changed(bool)``
    when "Skip files that cannot be used" is ticked or cleared (the Quantize problem changes with it)."""

    clear_requested = Signal()
    skip_changed = Signal(bool)

    def __init__(self, choose_action: QAction, parent: QWidget | None = None):
        super().__init__(parent)
        self.setObjectName("calibration_panel")
        self.folder = QLabel()
        self.folder.setObjectName("calibration_folder")
        self.folder.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.folder.setWordWrap(True)
        # A long path must not widen the pane (a path has no spaces to wrap at): it is cut, its tooltip has it.
        self.folder.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
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
        self.summary = QLabel()
        self.summary.setObjectName("calibration_summary")
        self.summary.setWordWrap(True)
        self.summary.setTextFormat(Qt.TextFormat.PlainText)
        self.skip = QCheckBox(SKIP_LABEL)
        self.skip.setObjectName("calibration_skip_unusable")
        self.skip.setToolTip(
            "Leave out the files marked ✗ (the report lists them); "
            "otherwise static mode cannot run until they are fixed"
        )
        self.skip.toggled.connect(self._skip_toggled)
        self.dry_run = QLabel()
        self.dry_run.setObjectName("dry_run")
        self.dry_run.setWordWrap(True)
        self.dry_run.setTextFormat(Qt.TextFormat.PlainText)
        self.table = QTableWidget(0, len(_COLUMNS))
        self.table.setObjectName("calibration_table")
        self.table.setHorizontalHeaderLabels(list(_COLUMNS))
        self.table.verticalHeader().hide()
        self.table.setEditTriggers(QTableWidget.EditTrigger.NoEditTriggers)
        self.table.setSelectionBehavior(QTableWidget.SelectionBehavior.SelectRows)
        # Every column fits its contents, the file names included (never cut to "b…"); a pane too
        # narrow for them all scrolls.  Why a file cannot be used spans Tensor … Range without
        # widening them (its tooltip has it whole).
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        header.setStretchLastSection(False)
        self.table.setItemDelegate(_SpanDelegate(self.table))
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
        dl.addWidget(self.skip)
        dl.addWidget(self.dry_run)
        dl.addWidget(self.table, 1)
        self.stack.addWidget(self.hint)
        self.stack.addWidget(details)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(6, 6, 6, 6)
        layout.addLayout(top)
        layout.addWidget(self.stack, 1)
        self._preview: Any = None  # the CalibrationPreview shown, None while there is none
        self._failed = False  # the folder could not be read at all
        self.set_folder(None)

    def skip_unusable(self) -> bool:
        """Whether files that cannot be used are to be left out (``load_calibration(skip_unusable=...)``)."""
        return self.skip.isChecked()

    def problem(self, static: bool) -> str | None:
        """Why Quantize cannot run in static mode with this folder (None: it can, or it is not static mode)."""
        if not static:
            return None
        if self._failed or (self._preview is not None and self._preview.usable == 0 and self._preview.files):
            return NO_USABLE
        if self._preview is None or not self._preview.unusable or self.skip_unusable():
            return None
        n = len(self._preview.unusable)
        return f"{n} calibration file{'s' if n > 1 else ''} cannot be used: tick '{SKIP_LABEL}' or fix them"

    def set_folder(self, folder: str | None) -> None:
        """Show the chosen folder (None: none); the preview follows from the worker."""
        self.folder.setText(
            f"<b>{Path(folder).name}</b><br><small>{folder}</small>" if folder else "<i>No folder chosen</i>"
        )
        self.folder.setToolTip(folder or "")
        self.clear_button.setEnabled(folder is not None)
        self._preview, self._failed = None, False
        self.table.clearSpans()
        self.table.setRowCount(0)
        self._set_summary("Reading the folder…" if folder else "", None)
        self.dry_run.setText("")
        self.stack.setCurrentIndex(1 if folder else 0)

    def show_preview(self, preview: Any) -> None:
        """Fill the table from a CalibrationPreview and show its counts and dry-run result."""
        self._preview, self._failed = preview, False
        rows = preview.to_rows()
        self.table.setUpdatesEnabled(False)
        self.table.clearSpans()
        self.table.setRowCount(min(len(rows), MAX_ROWS))
        for r, row in enumerate(rows[:MAX_ROWS]):
            self._fill_row(r, row)
        # A folder of lone tensors has no keys: the Tensor column would stay empty (a note covers the others).
        shown = [row for row in rows if not row["unusable"] and not row["skipped"]]
        self.table.setColumnHidden(TENSOR, all(not row["key"] and row["passed_as"] != "keywords" for row in shown))
        self.table.setUpdatesEnabled(True)
        self._show_counts()
        if preview.dry_run_error:
            self._set_dry_run(f"✗ Dry run failed: {preview.dry_run_error}", colors.ERROR)
        elif preview.dry_run_structure:
            outs = ", ".join(
                f"{k or 'output'} {list(s) if s is not None else ''} {d}".replace("  ", " ")
                for k, s, d in preview.dry_run_outputs[:4]
            )
            which = preview.dry_run_file or "the first sample"
            self._set_dry_run(f"✓ Dry run of {which}: {preview.dry_run_structure} → {outs}", colors.OK)
        else:
            self._set_dry_run("Open a model to dry-run the samples through it.", None)

    def _fill_row(self, r: int, row: dict[str, Any]) -> None:
        shape = "" if row["shape"] is None else "×".join(str(d) for d in row["shape"]) or "scalar"
        cells = [
            row["file"],
            row["key"] or ("(kwargs)" if row["passed_as"] == "keywords" else ""),
            shape,
            row["dtype"] or "",
            _range(row),
            format_bytes(row["bytes"]),
        ]
        note, color = None, None
        if row["unusable"]:
            note, color = f"✗ cannot be used: {row['unusable']}", QColor(colors.ERROR)
        elif row["skipped"]:
            note, color = f"skipped: {row['skipped']}", self.palette().placeholderText().color()
        if note is not None:
            cells[NOTE : RANGE + 1] = [note] + [""] * (RANGE - NOTE)
        for c, text in enumerate(cells):
            item = QTableWidgetItem(text)
            if color is not None:
                item.setForeground(color)
                item.setToolTip(note or "")
            elif c == FILE:
                item.setToolTip(text)
            if note is not None and c == NOTE:
                item.setData(_SPANNED, True)
            self.table.setItem(r, c, item)
        if note is not None:
            self.table.setSpan(r, NOTE, 1, RANGE - NOTE + 1)

    def _skip_toggled(self, checked: bool) -> None:
        if self._preview is not None:
            self._show_counts()
        self.skip_changed.emit(checked)

    def _show_counts(self) -> None:
        """The engine's count of what a run would use, and what happens to the files it cannot."""
        preview = self._preview
        text = preview.usability()
        bad = preview.unusable
        if bad:
            listed = ", ".join(name for name, _ in bad[:3]) + (f" and {len(bad) - 3} more" if len(bad) > 3 else "")
            fate = "left out (the report lists them)" if self.skip_unusable() else "a run needs them fixed or skipped"
            text += f"\n✗ cannot be used: {listed}: {fate}"
        rows = len(preview.to_rows())
        if rows > MAX_ROWS:
            text += f"\n(the table shows the first {MAX_ROWS} of {rows} rows)"
        self._set_summary(text, colors.ERROR if bad and not self.skip_unusable() else None)

    def show_error(self, message: str) -> None:
        """The folder could not be read at all (missing, empty)."""
        self._preview, self._failed = None, True
        self.table.clearSpans()
        self.table.setRowCount(0)
        self._set_summary("", None)
        self._set_dry_run(f"✗ {message}", colors.ERROR)

    def _set_summary(self, text: str, color: str | None) -> None:
        self.summary.setText(text)
        self.summary.setStyleSheet(f"color: {color};" if color else "")

    def _set_dry_run(self, text: str, color: str | None) -> None:
        self.dry_run.setText(text)
        self.dry_run.setStyleSheet(f"color: {color};" if color else "color: palette(placeholder-text);")
