"""Take the main window's screenshots for the docs: empty, loaded, the queue with several jobs, mid-run,
finished, a quantized file opened, and a large model, at 1280x800 (the smallest size the layout is made for).

Run under a virtual X server so fonts and styles are the real ones:

    xvfb-run -a -s "-screen 0 1600x1000x24" python tools/screenshots.py [OUT_DIR]

Writes docs/screenshots/{empty,loaded,queue,mid-run,finished,quantized-file,large-model}.png, and
algorithm-settings.png (the Settings pane's Algorithm section, GPTQ on int4) and export-menu.png
(File → Export after a run).  ``--new`` takes only those two (quicker, to check them).
The mid-run shot pauses the worker inside its ``on_layer`` callback, so it
always shows a run half done.  Settings and the queue are kept in a temporary
folder.  Run ``python tools/build_user_guide.py`` afterwards: the bundled user
guide carries copies of the screenshots it shows.
"""

from __future__ import annotations

import os
import sys
import tempfile
import threading
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SIZE = (1280, 800)

LARGE_MODEL = '''
"""A 16-block transformer-style stack (random weights) to show the dashboard with ~100 layers."""
import torch
from torch import nn


class Block(nn.Module):
    def __init__(self, d, scale):
        super().__init__()
        self.norm1 = nn.LayerNorm(d)
        self.q, self.k, self.v, self.o = (nn.Linear(d, d) for _ in range(4))
        self.norm2 = nn.LayerNorm(d)
        self.up = nn.Linear(d, 4 * d)
        self.down = nn.Linear(4 * d, d)
        with torch.no_grad():  # a few outlier channels, as trained models have
            self.up.weight[: int(scale)] *= 12.0

    def forward(self, x):
        h = self.norm1(x)
        att = torch.softmax(self.q(h) @ self.k(h).transpose(1, 2) / 8.0, -1) @ self.v(h)
        x = x + self.o(att)
        return x + self.down(torch.relu(self.up(self.norm2(x))))


class LargeStack(nn.Module):
    def __init__(self, d=64, depth=16):
        super().__init__()
        torch.manual_seed(0)
        self.embed = nn.Embedding(100, d)
        self.blocks = nn.ModuleList(Block(d, i % 5) for i in range(depth))
        self.head = nn.Linear(d, 10)

    def forward(self, tokens):
        x = self.embed(tokens)
        for block in self.blocks:
            x = block(x)
        return self.head(x.mean(1))
'''


def algorithm_and_export_shots(window, shot, wait, settle) -> None:
    """algorithm-settings.png: the transformer demo at int4 weight-only, per-group, GPTQ chosen, the
    Settings pane scrolled to its Algorithm section; export-menu.png: File → Export open after a run."""
    from PySide6.QtCore import QPoint, Qt
    from PySide6.QtWidgets import QApplication, QScrollArea

    panel = window.settings_panel
    combos = panel.combos
    combos["dtype"].setCurrentText("int4")
    combos["mode"].setCurrentText("weight-only")
    combos["granularity"].setCurrentText("per-group")
    algorithm = panel.algorithms.algorithm
    algorithm.setCurrentIndex(algorithm.findData("gptq"))
    window.settings_dock.raise_()
    # The Settings pane tall enough for the whole Algorithm section (the Calibration pane shorter).
    docks = [window.settings_dock, window.calibration_dock]
    heights = [d.height() for d in docks]
    window.resizeDocks(docks, [sum(heights) - 200, 200], Qt.Orientation.Vertical)
    scroll = window.settings_dock.widget()
    assert isinstance(scroll, QScrollArea)
    settle()
    heading = panel.findChild(type(panel.note), "algorithm_heading")
    scroll.verticalScrollBar().setValue(heading.mapTo(panel, heading.rect().topLeft()).y())
    shot(window, "algorithm-settings")
    window.resizeDocks(docks, heights, Qt.Orientation.Vertical)

    window.start_quantize()
    wait(lambda: window.session.result is not None and not window.runner.busy)
    file_menu = window.commands.file_menu
    bar = window.menuBar()
    file_menu.popup(bar.mapToGlobal(bar.actionGeometry(file_menu.menuAction()).bottomLeft()))
    settle()
    export = window.exporting.menu
    file_menu.setActiveAction(export.menuAction())
    export.popup(file_menu.mapToGlobal(file_menu.actionGeometry(export.menuAction()).topRight() + QPoint(-4, 0)))
    settle(500)
    # Menus are windows of their own: grab the screen where the window is (a window grab leaves them out).
    screen = QApplication.primaryScreen()
    frame = window.frameGeometry()
    image = screen.grabWindow(0, frame.x(), frame.y(), frame.width(), frame.height())
    path = shot.out / "export-menu.png"
    image.save(str(path))
    print(f"wrote {path}")
    export.hide()
    file_menu.hide()
    settle()


def main(out: Path, new_only: bool = False) -> None:
    settings_dir = tempfile.mkdtemp(prefix="mono-quant-shots-")
    os.environ["XDG_CONFIG_HOME"] = settings_dir
    os.environ["XDG_DATA_HOME"] = os.path.join(settings_dir, "data")  # the queue's queue.json
    os.environ["HOME"] = settings_dir  # queued demo outputs go to ~/Documents or ~: keep them here
    from PySide6.QtCore import QEventLoop, QSettings, QTimer

    from mono_quant_gui.app import create_application
    from mono_quant_gui.run import tasks
    from mono_quant_gui.window.main_window import MainWindow

    create_application()
    QSettings.setPath(QSettings.Format.NativeFormat, QSettings.Scope.UserScope, settings_dir)
    out.mkdir(parents=True, exist_ok=True)

    def wait(predicate, timeout_s: float = 120.0) -> None:
        loop = QEventLoop()
        check = QTimer(interval=10)
        check.timeout.connect(lambda: predicate() and loop.quit())
        QTimer.singleShot(int(timeout_s * 1000), loop.quit)
        check.start()
        loop.exec()
        check.stop()
        if not predicate():
            raise TimeoutError("the window did not get there in time")

    def settle(ms: int = 300) -> None:
        loop = QEventLoop()
        QTimer.singleShot(ms, loop.quit)
        loop.exec()

    def shot(window, name: str) -> None:
        settle()
        path = out / f"{name}.png"
        window.grab().save(str(path))
        print(f"wrote {path}")

    shot.out = out  # type: ignore[attr-defined]

    window = MainWindow()
    window.resize(*SIZE)
    window.show()
    if new_only:
        window.open_demo("transformer")
        wait(lambda: not window.runner.busy)
        window.modules.view.expandToDepth(2)
        algorithm_and_export_shots(window, shot, wait, settle)
        window.confirm_quit_while_busy = False
        window.close()
        return
    shot(window, "empty")

    window.open_demo("transformer")
    wait(lambda: not window.runner.busy)
    window.modules.view.expandToDepth(2)
    window.settings_panel.combos["mode"].setCurrentText("static")
    window.settings_panel.combos["observer"].setCurrentText("histogram")
    shot(window, "loaded")

    window.commands.add_to_queue.trigger()  # raises the Queue pane
    for dtype in ("int4", "bf16", "fp16"):  # the same model queued in other dtypes
        window.settings_panel.combos["dtype"].setCurrentText(dtype)
        window.commands.add_to_queue.trigger()
    window.settings_panel.combos["dtype"].setCurrentText("int8")
    window.settings_panel.combos["mode"].setCurrentText("static")
    window.queue_panel.select_ids([window.queue_panel.model.entries()[1].id])
    shot(window, "queue")
    window.queue_panel.remove_ids([e.id for e in window.queue_panel.model.entries()])
    window.log_dock.raise_()

    # Pause the worker after a few layers: the run is then visibly half done.
    paused, resume = threading.Event(), threading.Event()
    original = tasks.quantize_task

    def pausing_task(ctx, **kwargs):
        forward = ctx.on_layer
        count = [0]

        def on_layer(layer):
            forward(layer)
            count[0] += 1
            if count[0] == 4:
                paused.set()
                resume.wait(60)

        ctx.on_layer = on_layer
        return original(ctx, **kwargs)

    tasks.quantize_task = pausing_task
    window.start_quantize()
    wait(paused.is_set)
    wait(lambda: window.dashboard.sqnr_plot.bar_count() == 4)
    shot(window, "mid-run")
    resume.set()
    wait(lambda: not window.runner.busy)
    tasks.quantize_task = original
    shot(window, "finished")

    # The result saved, then opened again as a quantized model in a fresh window.
    from mono_quant_gui.window import dialogs

    saved = Path(tempfile.mkdtemp(prefix="mono-quant-saved-")) / "tiny-transformer.int8.safetensors"
    real_ask = dialogs.ask_save_path
    dialogs.ask_save_path = lambda parent, name: (str(saved), "")
    window.save_as()
    wait(lambda: not window.runner.busy and saved.exists())
    dialogs.ask_save_path = real_ask
    second = MainWindow()
    second.resize(*SIZE)
    second.show()
    second.open_quantized_file(str(saved), str(window.session.loaded.source["script_path"]))
    wait(lambda: second.session.result is not None and not second.runner.busy)
    second.modules.view.expandToDepth(2)
    shot(second, "quantized-file")
    second.confirm_quit_while_busy = False
    second.close()

    # Reaching a target: the CNN demo, int4 per-tensor, no drop of its top-1 allowed.
    from mono_quant_core import QuantConfig

    window.open_demo("cnn")
    wait(lambda: not window.runner.busy and window.session.loaded is not None)
    coarse = QuantConfig(dtype="int4", mode="weight-only", granularity="per-tensor", scheme="asymmetric")
    window.settings_panel.set_config(coarse.replace(target_metric_drop=0.0))
    window.start_quantize()
    wait(lambda: window.session.result is not None and not window.runner.busy)
    window.modules.view.expandToDepth(2)
    shot(window, "auto-target")
    window.commands.analyze_sensitivity.trigger()
    wait(lambda: not window.runner.busy and window.session.sensitivity is not None)
    shot(window, "sensitivity")
    window.settings_panel.set_config(QuantConfig())

    import torch

    folder = Path(tempfile.mkdtemp(prefix="mono-quant-large-"))
    (folder / "large_model.py").write_text(LARGE_MODEL)
    calib = folder / "calibration"
    calib.mkdir()
    gen = torch.Generator().manual_seed(1)
    for i in range(40):
        torch.save(torch.randint(0, 100, (4, 24), generator=gen), calib / f"batch_{i}.pt")
    window.open_script(str(folder / "large_model.py"))
    window.set_calibration_folder(str(calib))
    wait(lambda: not window.runner.busy)
    window.settings_panel.combos["mode"].setCurrentText("weight-only")
    window.start_quantize()
    wait(lambda: window.session.result is not None and not window.runner.busy)
    window.modules.select_layer("blocks.3.up")
    shot(window, "large-model")
    window.settings_panel.set_config(QuantConfig())

    window.open_demo("transformer")
    wait(lambda: not window.runner.busy)
    algorithm_and_export_shots(window, shot, wait, settle)
    window.confirm_quit_while_busy = False
    window.close()


if __name__ == "__main__":
    args = [a for a in sys.argv[1:] if a != "--new"]
    main(Path(args[0]) if args else ROOT / "docs" / "screenshots", new_only="--new" in sys.argv[1:])
