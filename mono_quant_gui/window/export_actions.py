"""File → Export: the result on screen as an ONNX QDQ model or a compressed-tensors folder.

Enabled when there is a quantized result (a run's, or an opened quantized file's).  The
compressed-tensors export first shows what ``compressed_tensors_problems`` finds (layers
written float, schemes vLLM cannot run) and lets the user cancel; the ONNX export needs an
example input: the first calibration sample of the session, else a file the user picks.
Both run on the window's runner like Save As, and a failure opens an error dialog naming
the file and the problem.  The export engines are imported inside the tasks: without the
``[export]`` extra the action says which extra to install.
"""

from __future__ import annotations

import importlib.util
import logging
import os
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from PySide6.QtGui import QAction
from PySide6.QtWidgets import QFileDialog, QMenu, QMessageBox, QWidget

from mono_quant_gui.run.tasks import SaveOutcome
from mono_quant_gui.run.worker import Task, TaskContext
from mono_quant_gui.window import dialogs
from mono_quant_gui.window.formatting import format_bytes

if TYPE_CHECKING:
    from mono_quant_gui.window.main_window import MainWindow

log = logging.getLogger("mono_quant_gui")

#: The extra that brings the export dependencies.
EXTRA = "pip install 'mono-quant[export]'"
#: Import names each target needs.
NEEDS = {"onnx": ("onnx", "onnxruntime"), "compressed-tensors": ("compressed_tensors",)}


def missing_modules(target: str) -> list[str]:
    """The export dependencies of ``target`` that are not installed."""
    return [name for name in NEEDS[target] if importlib.util.find_spec(name) is None]


# -- dialogs (module-level so tests patch them) ------------------------------------------------
def ask_export_folder(parent: QWidget, suggested: str) -> str:
    """The folder name for a compressed-tensors export ("" when cancelled); it need not exist."""
    path, _ = QFileDialog.getSaveFileName(
        parent, "Export compressed-tensors folder", suggested, "Folder (*)", "", QFileDialog.Option.DontConfirmOverwrite
    )
    return path


def ask_onnx_path(parent: QWidget, suggested: str) -> str:
    path, _ = QFileDialog.getSaveFileName(parent, "Export ONNX model", suggested, "ONNX model (*.onnx)")
    return path


def ask_example_file(parent: QWidget, folder: str) -> str:
    """An example input for the ONNX export ("" when cancelled)."""
    path, _ = QFileDialog.getOpenFileName(
        parent, "Example input for the ONNX graph", folder, "Tensors (*.pt *.safetensors *.npy);;All files (*)"
    )
    return path


def confirm_problems(parent: QWidget, target: str, problems: list[str]) -> bool:
    """Show what the pre-export check found; True to export anyway."""
    box = QMessageBox(
        QMessageBox.Icon.Warning,
        f"Export {target}",
        f"{len(problems)} thing(s) to know before exporting (details below). Export anyway?",
        QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.Cancel,
        parent,
    )
    box.setDetailedText("\n".join(problems))
    return box.exec() == QMessageBox.StandardButton.Yes


def show_missing(parent: QWidget, target: str, missing: list[str]) -> None:
    dialogs.show_error(
        parent,
        f"Export {target}",
        f"The {target} export needs {', '.join(missing)}, which is not installed: {EXTRA}",
    )


# -- tasks (worker thread) ------------------------------------------------------------------------
def compressed_tensors_task(ctx: TaskContext, result: Any, path: str) -> SaveOutcome:
    """Write the compressed-tensors folder (atomically, by the core)."""
    ctx.progress(0, 0, f"Exporting {os.path.basename(path)}…")
    from mono_quant_core import save_quantized

    return SaveOutcome(path, int(save_quantized(result, path, format="compressed-tensors")))


def first_sample(folder: str) -> Any:
    """The first calibration sample of ``folder``."""
    from mono_quant_core import load_calibration

    return load_calibration(folder, samples=1, check=False)[0]


def read_example(path: str) -> Any:
    """An example input from a file (what a calibration folder's files hold)."""
    from mono_quant_core import load_calibration

    calibration = load_calibration(os.path.dirname(path) or ".", check=False)
    for i, name in enumerate(calibration.files):
        if os.path.samefile(name, path):
            return calibration[i]
    raise FileNotFoundError(path)


def onnx_task(ctx: TaskContext, result: Any, path: str, folder: str | None, example_file: str | None) -> SaveOutcome:
    """Export ONNX QDQ with the example from ``example_file``, else the first sample of ``folder``."""
    ctx.progress(0, 0, f"Exporting {os.path.basename(path)}…")
    from mono_quant_core.export.onnx_qdq import export_onnx  # type: ignore[import-not-found,unused-ignore]

    example = read_example(example_file) if example_file else first_sample(folder or ".")
    export_onnx(result, example, path)
    return SaveOutcome(path, os.path.getsize(path))


class Exporting:
    """The File → Export submenu and its two actions."""

    def __init__(self, window: MainWindow) -> None:
        self.w = window
        self.menu = QMenu("&Export", window)
        self.menu.setObjectName("export_menu")
        self.onnx = QAction("ONNX…", window)
        self.onnx.setObjectName("export_onnx")
        self.compressed = QAction("compressed-tensors…", window)
        self.compressed.setObjectName("export_compressed_tensors")
        self.menu.addActions([self.onnx, self.compressed])
        self.onnx.triggered.connect(self.export_onnx)
        self.compressed.triggered.connect(self.export_compressed_tensors)
        self.menu.aboutToShow.connect(self.update)
        window.runner.busy_changed.connect(lambda _busy: self.update())
        self.update()

    def install(self, file_menu: QMenu, before: QAction | None) -> None:
        """Put the submenu into the File menu (before ``before``, else at the end)."""
        if before is None:
            file_menu.addMenu(self.menu)
        else:
            file_menu.insertMenu(before, self.menu)

    def update(self) -> None:
        """Enabled with a result and an idle runner; the tips say which extra a target still needs."""
        ready = self.w.session.result is not None and not self.w.runner.busy
        for action, target, tip in (
            (self.onnx, "onnx", "Export an ONNX model with QuantizeLinear/DequantizeLinear (ONNX Runtime, TensorRT)"),
            (
                self.compressed,
                "compressed-tensors",
                "Export a compressed-tensors folder (transformers, vLLM)",
            ),
        ):
            missing = missing_modules(target)
            action.setEnabled(ready)
            action.setToolTip(f"Needs {', '.join(missing)}: {EXTRA}" if missing else tip)
            action.setStatusTip(action.toolTip())

    def _suggested(self, suffix: str) -> str:
        stem = Path(self.w.running.suggested_save_path()).with_suffix("")
        return f"{stem}{suffix}"

    def _submit(self, title: str, fn: Any, path: str) -> None:
        self.w.runner.submit(
            Task(
                "save",
                f"Exporting {Path(path).name}",
                fn,
                on_done=self.w.running._done(self._exported),
                on_error=self.w.running._failed(f"Could not export {Path(path).name}"),
                on_cancel=self.w.running._stopped(),
            )
        )

    def _exported(self, outcome: SaveOutcome) -> None:
        self.w.file_label.setText(f"Exported {outcome.path} ({format_bytes(outcome.bytes)})")
        self.w.statusBar().showMessage(f"Exported {Path(outcome.path).name}: {format_bytes(outcome.bytes)}")
        log.info("exported %s (%s)", outcome.path, format_bytes(outcome.bytes))

    def export_compressed_tensors(self) -> None:
        result = self.w.session.result
        if result is None or self.w.runner.busy:
            return
        missing = missing_modules("compressed-tensors")
        if missing:
            show_missing(self.w, "compressed-tensors", missing)
            return
        from mono_quant_core import compressed_tensors_problems

        problems = compressed_tensors_problems(result)
        if problems and not confirm_problems(self.w, "compressed-tensors", problems):
            return
        path = ask_export_folder(self.w, self._suggested(".compressed-tensors"))
        if not path:
            return
        self._submit("compressed-tensors", partial(compressed_tensors_task, result=result, path=path), path)

    def export_onnx(self) -> None:
        result = self.w.session.result
        if result is None or self.w.runner.busy:
            return
        missing = missing_modules("onnx")
        if missing:
            show_missing(self.w, "ONNX", missing)
            return
        folder = self.w.session.calibration
        example_file = None
        if not folder:
            example_file = ask_example_file(self.w, os.path.dirname(self._suggested("")))
            if not example_file:
                return
        path = ask_onnx_path(self.w, self._suggested(".onnx"))
        if not path:
            return
        if not path.lower().endswith(".onnx"):
            path += ".onnx"
        if os.path.exists(path) and not dialogs.confirm_overwrite(self.w, path):
            return
        self._submit(
            "ONNX", partial(onnx_task, result=result, path=path, folder=folder, example_file=example_file), path
        )
