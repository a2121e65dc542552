"""Every dialog the window opens, as module-level functions so tests can patch them.

Errors open without blocking (``QMessageBox.open``); questions that need an
answer before going on (entry choice, key mismatch, save path, overwrite)
block in the usual Qt way.
"""

from __future__ import annotations

from pathlib import Path

from PySide6.QtWidgets import QFileDialog, QInputDialog, QMessageBox, QPushButton, QWidget

from mono_quant_core.config import CHECKPOINT_SUFFIXES

SAVE_FILTERS = ("SafeTensors (*.safetensors)", "PyTorch (*.pt *.pth)")
_FILTER_SUFFIX = {SAVE_FILTERS[0]: (".safetensors",), SAVE_FILTERS[1]: (".pt", ".pth")}
SCRIPT_FILTER = "Python model script (*.py)"
CHECKPOINT_FILTER = f"Checkpoints ({' '.join('*' + s for s in CHECKPOINT_SUFFIXES)});;All files (*)"


def show_error(parent: QWidget, title: str, message: str, details: str = "") -> QMessageBox:
    """A non-blocking error box with the message and expandable details."""
    box = QMessageBox(QMessageBox.Icon.Critical, title, message, QMessageBox.StandardButton.Close, parent)
    box.setObjectName("error_box")
    if details:
        box.setDetailedText(details)
    box.open()
    return box


def choose_entry(parent: QWidget, script: str, candidates: list[str]) -> str | None:
    """Ask which of several models in ``script`` to load; None when the user cancels."""
    name, ok = QInputDialog.getItem(
        parent, "Choose a model", f"{Path(script).name} defines several models:", candidates, 0, False
    )
    return name if ok else None


def key_mismatch_box(parent: QWidget, summary: str, details: str) -> tuple[QMessageBox, QPushButton]:
    """The question :func:`confirm_key_mismatch` asks, and its "Continue anyway" button.

    Stop is the default (Enter, Esc and closing the box all stop): going on
    with a partly matching checkpoint is a choice, never an accident."""
    box = QMessageBox(QMessageBox.Icon.Warning, "Checkpoint does not match", summary, parent=parent)
    box.setInformativeText(
        "Continue with the weights that matched (the others keep their initial values), "
        "or stop and choose another checkpoint?"
    )
    box.setDetailedText(details)
    go = box.addButton("Continue anyway", QMessageBox.ButtonRole.AcceptRole)
    stop = box.addButton("Stop", QMessageBox.ButtonRole.RejectRole)
    box.setDefaultButton(stop)
    box.setEscapeButton(stop)
    return box, go


def confirm_key_mismatch(parent: QWidget, summary: str, details: str) -> bool:
    """The checkpoint does not match the model: True to continue with what matched."""
    box, go = key_mismatch_box(parent, summary, details)
    box.exec()
    return box.clickedButton() is go


def ask_open_script(parent: QWidget, folder: str) -> str | None:
    path, _ = QFileDialog.getOpenFileName(parent, "Open model script", folder, SCRIPT_FILTER)
    return path or None


def ask_open_checkpoint(parent: QWidget, folder: str) -> str | None:
    path, _ = QFileDialog.getOpenFileName(parent, "Open checkpoint", folder, CHECKPOINT_FILTER)
    return path or None


def ask_calibration_folder(parent: QWidget, folder: str) -> str | None:
    path = QFileDialog.getExistingDirectory(parent, "Calibration folder", folder)
    return path or None


def ask_save_path(parent: QWidget, suggested: str) -> tuple[str, str]:
    """The save dialog; returns (path, chosen filter), path "" when cancelled.

    The dialog's own overwrite question is off: :func:`confirm_overwrite` asks
    after the extension has been added.
    """
    return QFileDialog.getSaveFileName(
        parent,
        "Save quantized model",
        suggested,
        ";;".join(SAVE_FILTERS),
        SAVE_FILTERS[0],
        QFileDialog.Option.DontConfirmOverwrite,
    )


def confirm_overwrite(parent: QWidget, path: str) -> bool:
    answer = QMessageBox.question(
        parent,
        "Replace file?",
        f"{Path(path).name} already exists in {Path(path).parent}.\nReplace it?",
        QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.Cancel,
        QMessageBox.StandardButton.Cancel,
    )
    return answer == QMessageBox.StandardButton.Yes


def with_extension(path: str, chosen_filter: str) -> str:
    """Add the chosen filter's extension when the name has none of the known ones."""
    lower = path.lower()
    if lower.endswith((".safetensors", ".pt", ".pth")):
        return path
    suffixes = _FILTER_SUFFIX.get(chosen_filter, _FILTER_SUFFIX[SAVE_FILTERS[0]])
    return path + suffixes[0]


QUANTIZED_FILTER = "mono-quant outputs (*.safetensors *.pt *.pth);;All files (*)"


def ask_open_quantized(parent: QWidget, folder: str) -> str | None:
    path, _ = QFileDialog.getOpenFileName(parent, "Open quantized model", folder, QUANTIZED_FILTER)
    return path or None


def _ask(
    parent: QWidget,
    icon: QMessageBox.Icon,
    title: str,
    text: str,
    info: str,
    yes: tuple[str, QMessageBox.ButtonRole],
    no: str,
    default_yes: bool,
) -> bool:
    """A two-button question: True when ``yes`` was clicked (Esc and closing the box answer ``no``)."""
    box = QMessageBox(icon, title, text, parent=parent)
    box.setInformativeText(info)
    go = box.addButton(*yes)
    stay = box.addButton(no, QMessageBox.ButtonRole.RejectRole)
    box.setDefaultButton(go if default_yes else stay)
    box.setEscapeButton(stay)
    box.exec()
    return box.clickedButton() is go


def confirm_open_quantized(parent: QWidget, message: str) -> bool:
    """A mono-quant output was opened as a checkpoint: True to open it as a quantized model."""
    return _ask(
        parent,
        QMessageBox.Icon.Question,
        "A quantized model",
        message,
        "It cannot be loaded as float weights. Open it as a quantized model instead: its layers, "
        "report and figures, ready to run, save again or export?",
        ("Open as Quantized Model", QMessageBox.ButtonRole.AcceptRole),
        "Cancel",
        default_yes=True,
    )


def confirm_quit(parent: QWidget, busy: str) -> bool:
    """Quitting would stop ``busy`` ("quantizing", "the queue's jobs"): True to quit anyway."""
    return _ask(
        parent,
        QMessageBox.Icon.Warning,
        "Quit mono-quant?",
        f"Still at work: {busy}.",
        "Quitting cancels it; a queued job that was running is queued again.",
        ("Quit", QMessageBox.ButtonRole.DestructiveRole),
        "Keep Working",
        default_yes=False,
    )


CSV_FILTER = "CSV table (*.csv);;All files (*)"


def ask_csv_path(parent: QWidget, suggested: str) -> str | None:
    """Where to write the per-layer table (the dialog asks before replacing a file); None when cancelled."""
    path, _ = QFileDialog.getSaveFileName(parent, "Export layer table", suggested, CSV_FILTER)
    return path or None
