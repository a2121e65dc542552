"""GUI responsiveness: time to window, event-loop stalls during a run, module tree speed at 5,000+ modules.

Usage: ``QT_QPA_PLATFORM=offscreen python bench/bench_gui.py``.  References
measured in the same run: ``import torch`` in a fresh process (the window must
appear before that cost is paid) and the run's own wall time.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from itertools import pairwise
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

TIME_TO_WINDOW = r"""
import sys, time
t0 = time.perf_counter()
from mono_quant_gui.app import create_application
from mono_quant_gui.window.main_window import MainWindow
app = create_application()
window = MainWindow()
window.show()
app.processEvents()
print(time.perf_counter() - t0, "torch" in sys.modules)
window.close()
"""

BIG_MODEL = """
import torch
from torch import nn


class Block(nn.Module):
    def __init__(self, d):
        super().__init__()
        self.norm = nn.LayerNorm(d)
        self.up = nn.Linear(d, 4 * d)
        self.act = nn.GELU()
        self.down = nn.Linear(4 * d, d)

    def forward(self, x):
        return x + self.down(self.act(self.up(self.norm(x))))


class Stack(nn.Module):
    def __init__(self, d=256, depth=24):
        super().__init__()
        self.blocks = nn.Sequential(*[Block(d) for _ in range(depth)])
        self.head = nn.Linear(d, 16)

    def forward(self, x):
        return self.head(self.blocks(x))
"""


def fresh_process(code: str) -> str:
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env=dict(os.environ, XDG_CONFIG_HOME=tempfile.mkdtemp()),
    )
    return done.stdout.strip()


def bench_startup() -> None:
    torch_s = min(
        float(fresh_process("import time; t=time.perf_counter(); import torch; print(time.perf_counter()-t)"))
        for _ in range(3)
    )
    runs = [fresh_process(TIME_TO_WINDOW).split() for _ in range(3)]
    window_s = min(float(r[0]) for r in runs)
    torch_loaded = any(r[1] == "True" for r in runs)
    print(
        f"time to window          {window_s:6.2f} s   (import torch alone: {torch_s:.2f} s; "
        f"torch loaded before the window: {torch_loaded})"
    )


def heartbeat_gaps(seconds: float, wait) -> list[float]:
    """Gaps between 10 ms timer ticks while the window idles: the machine's own scheduling noise."""
    from PySide6.QtCore import QTimer

    ticks: list[float] = []
    heartbeat = QTimer(interval=10)
    heartbeat.timeout.connect(lambda: ticks.append(time.perf_counter()))
    heartbeat.start()
    end = time.perf_counter() + seconds
    wait(lambda: time.perf_counter() > end)
    heartbeat.stop()
    return sorted(b - a for a, b in pairwise(ticks))


def bench_run_stalls(window, qtbot_wait) -> None:
    import torch
    from PySide6.QtCore import QTimer

    folder = Path(tempfile.mkdtemp())
    (folder / "stack.py").write_text(BIG_MODEL)
    calib = folder / "calib"
    calib.mkdir()
    for i in range(48):
        torch.save(torch.randn(8, 32, 256), calib / f"x{i}.pt")
    window.open_script(str(folder / "stack.py"))
    window.set_calibration_folder(str(calib))
    qtbot_wait(lambda: not window.runner.busy)
    panel = window.settings_panel
    panel.combos["mode"].setCurrentText("static")
    panel.combos["observer"].setCurrentText("histogram")
    ticks: list[float] = []
    last_message = [""]
    at_tick: list[str] = []
    window.runner.progress.connect(lambda d, t, m: last_message.__setitem__(0, f"{d}/{t} {m}"))
    heartbeat = QTimer(interval=10)
    heartbeat.timeout.connect(lambda: (ticks.append(time.perf_counter()), at_tick.append(last_message[0])))
    heartbeat.start()
    started = time.perf_counter()
    window.start_quantize()
    qtbot_wait(lambda: not window.runner.busy)
    wall = time.perf_counter() - started
    heartbeat.stop()
    pairs = sorted(((b - a), at_tick[i]) for i, (a, b) in enumerate(pairwise(ticks)))
    if os.environ.get("BENCH_VERBOSE"):
        for gap, message in pairs[-5:]:
            print(f"  gap {gap * 1000:.0f} ms after progress {message!r}")
    gaps = [g for g, _ in pairs]
    report = window.session.result.report if window.session.result else None
    layers = len(report.layers) if report else 0
    print(f"run (static, histogram) {wall:6.2f} s   {layers} layers, {len(ticks)} heartbeats of 10 ms")
    print(
        f"largest event-loop stall {gaps[-1] * 1000:5.0f} ms  (p99 {gaps[int(len(gaps) * 0.99)] * 1000:.0f} ms, "
        f"median {statistics.median(gaps) * 1000:.0f} ms)"
    )
    idle = heartbeat_gaps(min(wall, 10.0), qtbot_wait)
    print(
        f"same, idle window        {idle[-1] * 1000:5.0f} ms  (p99 {idle[int(len(idle) * 0.99)] * 1000:.0f} ms: "
        "the machine's own scheduling noise)"
    )


def bench_tree(qapp) -> None:
    from torch import nn

    from mono_quant_core import module_table
    from mono_quant_gui.modules.module_panel import ModulePanel

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1, self.act, self.fc2, self.norm = nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 4), nn.LayerNorm(4)

    model = nn.Sequential(*[Block() for _ in range(1250)])
    rows = module_table(model)
    panel = ModulePanel()
    panel.resize(500, 800)
    panel.show()
    qapp.processEvents()
    t0 = time.perf_counter()
    panel.set_rows(rows)
    panel.view.viewport().repaint()
    load = time.perf_counter() - t0
    t0 = time.perf_counter()
    panel.view.expandAll()
    panel.view.viewport().repaint()
    expand = time.perf_counter() - t0
    from PySide6.QtCore import Qt

    t0 = time.perf_counter()
    panel.model.setData(panel.model.row_of(""), Qt.CheckState.Unchecked, Qt.ItemDataRole.CheckStateRole)
    qapp.processEvents()
    toggle = time.perf_counter() - t0
    from mono_quant_core.report import LayerReport

    layers = [LayerReport(n, "Linear", "int8", weight_sqnr_db=40.0) for n in panel.model.quantizable_names()]
    t0 = time.perf_counter()
    panel.model.set_layer_results(layers)
    qapp.processEvents()
    panel.view.viewport().repaint()
    results = time.perf_counter() - t0
    print(
        f"tree of {len(rows)} modules     {load:6.3f} s to show, {expand:.3f} s to expand all, "
        f"{toggle:.3f} s to untick all, {results:.3f} s to show {len(layers)} layer results"
    )
    panel.close()


def main() -> None:
    bench_startup()
    from mono_quant_gui.app import create_application
    from mono_quant_gui.window.main_window import MainWindow

    app = create_application()

    def wait(predicate, timeout=300.0):
        """Run the event loop (not a polling loop) until ``predicate()`` holds."""
        from PySide6.QtCore import QEventLoop, QTimer

        loop = QEventLoop()
        check = QTimer(interval=5)
        check.timeout.connect(lambda: predicate() and loop.quit())
        QTimer.singleShot(int(timeout * 1000), loop.quit)
        check.start()
        loop.exec()
        check.stop()
        if not predicate():
            raise TimeoutError("the run did not finish")

    bench_tree(app)
    window = MainWindow()
    window.show()
    try:
        bench_run_stalls(window, wait)
    finally:
        window.close()


if __name__ == "__main__":
    main()
