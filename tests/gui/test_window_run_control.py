"""Cancel within one sample, then run again; one run at a time; torch work stays off the GUI thread."""

from __future__ import annotations

import threading

import pytest
from conftest import wait_idle
from PySide6.QtCore import QTimer

GATED_MODEL = '''
import threading
from torch import nn


class Gated(nn.Module):
    """Each forward waits for the test's gate (when one is set) and is counted."""

    gate = None
    calls = 0

    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(16, 32)
        self.fc2 = nn.Linear(32, 4)

    def forward(self, x):
        type(self).calls += 1
        if type(self).gate is not None:
            type(self).gate.wait(10)
        return self.fc2(self.fc1(x).relu())
'''


def gated_setup(window, qtbot, tmp_path):
    import torch

    script = tmp_path / "gated.py"
    script.write_text(GATED_MODEL)
    calib = tmp_path / "calib"
    calib.mkdir()
    for i in range(20):
        torch.save(torch.randn(4, 16), calib / f"x{i}.pt")
    window.open_script(str(script))
    window.set_calibration_folder(str(calib))
    wait_idle(qtbot, window)
    window.settings_panel.combos["mode"].setCurrentText("static")
    return type(window.session.model)


def test_cancel_takes_effect_within_one_sample_and_the_next_run_succeeds(window, qtbot, tmp_path):
    model_class = gated_setup(window, qtbot, tmp_path)
    gate = threading.Event()
    model_class.gate = gate
    model_class.calls = 0
    with qtbot.waitSignal(window.runner.progress, timeout=30_000):
        window.start_quantize()  # the first calibration sample now waits at the gate
    assert window.commands.cancel.isEnabled() and not window.commands.quantize.isEnabled()
    with qtbot.waitSignal(window.runner.cancelled, timeout=30_000):
        window.commands.cancel.trigger()
        calls_at_cancel = model_class.calls
        gate.set()
    assert model_class.calls == calls_at_cancel  # the sample in flight finished; no further one started
    assert window.session.result is None
    assert window.dashboard.output_card.detail.text() == "cancelled"
    assert "cancelled" in window.statusBar().currentMessage()
    wait_idle(qtbot, window)
    assert window.commands.quantize.isEnabled() and not window.commands.cancel.isEnabled()
    model_class.gate = None
    with qtbot.waitSignal(window.runner.finished, timeout=30_000):
        window.commands.quantize.trigger()
    assert [layer.name for layer in window.session.result.report.layers] == ["fc1", "fc2"]
    assert window.dashboard.sqnr_plot.bar_count() == 2


def test_quantize_is_refused_while_a_run_is_in_flight(window, qtbot, tmp_path):
    model_class = gated_setup(window, qtbot, tmp_path)
    gate = threading.Event()
    model_class.gate = gate
    with qtbot.waitSignal(window.runner.progress, timeout=30_000):
        window.start_quantize()
    window.start_quantize()  # ignored: the action is disabled
    assert window.runner.current.kind == "quantize" and not window.runner._pending
    with qtbot.waitSignal(window.runner.finished, timeout=30_000):
        gate.set()
    model_class.gate = None


def test_torch_work_runs_off_the_gui_thread_while_the_event_loop_keeps_turning(window, qtbot, monkeypatch):
    """Loading the transformer demo and a static run of it: quantize, calibration, validation and every
    module forward run on a worker thread, never on the GUI thread; and while the worker is inside a forward pass,
    the GUI thread's event loop keeps turning (a 10 ms timer ticks at least 5 times before the worker goes on).
    (How long the loop may stall is measured by bench/bench_gui.py, not here.)"""
    from torch import nn

    import mono_quant_core.calibration.runner as calibration_runner
    import mono_quant_core.quantizer as quantizer
    import mono_quant_core.validation as validation

    gui_thread = threading.get_ident()
    calls: list[tuple[str, int]] = []  # (what, thread ident)
    in_calibration = threading.Event()
    worker_at_gate = threading.Event()  # the worker is inside a forward pass, waiting
    loop_alive = threading.Event()  # set by the GUI thread once its loop turned while the worker waited
    gate_passed: list[bool] = []

    def recorded(what, fn):
        def wrapper(*args, **kwargs):
            calls.append((what, threading.get_ident()))
            return fn(*args, **kwargs)

        return wrapper

    import mono_quant_core

    for module, name in ((quantizer, "quantize"), (validation, "validate")):
        monkeypatch.setattr(module, name, recorded(name, getattr(module, name)))
    monkeypatch.setattr(mono_quant_core, "quantize", quantizer.quantize)  # the window calls the public name
    original_calibrate = calibration_runner.calibrate

    def calibrate(*args, **kwargs):
        calls.append(("calibrate", threading.get_ident()))
        in_calibration.set()
        return original_calibrate(*args, **kwargs)

    monkeypatch.setattr(calibration_runner, "calibrate", calibrate)
    original_call = nn.Module.__call__

    def module_call(self, *args, **kwargs):
        calls.append(("forward", threading.get_ident()))
        if in_calibration.is_set() and not worker_at_gate.is_set():
            # The first forward of the calibration waits until the GUI thread has turned its loop
            # a few times; if this ran on the GUI thread, the loop could not turn and the wait fails.
            worker_at_gate.set()
            gate_passed.append(loop_alive.wait(10))
        return original_call(self, *args, **kwargs)

    monkeypatch.setattr(nn.Module, "__call__", module_call)

    window.open_demo("transformer")
    wait_idle(qtbot, window)
    window.settings_panel.combos["mode"].setCurrentText("static")
    window.settings_panel.combos["observer"].setCurrentText("histogram")
    ticks = {"run": 0, "at gate": 0}
    progress_handled: list[tuple] = []
    in_run = []

    def tick():
        if in_run:
            ticks["run"] += 1
        if worker_at_gate.is_set() and not loop_alive.is_set():
            ticks["at gate"] += 1
            if ticks["at gate"] >= 5:
                loop_alive.set()

    heartbeat = QTimer(interval=10)
    heartbeat.timeout.connect(tick)
    window.runner.started.connect(lambda task: in_run.append(task.kind))
    window.runner.progress.connect(lambda *args: progress_handled.append(args) if in_run else None)
    heartbeat.start()
    try:
        with qtbot.waitSignal(window.runner.finished, timeout=60_000):
            window.start_quantize()
        in_run.clear()
    finally:
        heartbeat.stop()
        loop_alive.set()  # never leave the worker waiting

    assert [layer.name for layer in window.session.result.report.layers], "the run quantized nothing"
    kinds = {what for what, _ in calls}
    assert {"quantize", "calibrate", "validate", "forward"} <= kinds, kinds
    on_gui = sorted({what for what, thread in calls if thread == gui_thread})
    assert not on_gui, f"ran on the GUI thread: {on_gui}"
    assert sum(what == "forward" for what, _ in calls) > 10
    assert gate_passed == [True], "the GUI thread's event loop did not turn while the worker ran a forward pass"
    assert ticks["at gate"] >= 5 and ticks["run"] >= ticks["at gate"]
    assert progress_handled, "no progress reached the GUI thread during the run"


def test_quitting_during_a_run_asks_first(window, qtbot, monkeypatch):
    import time

    from mono_quant_core.errors import Cancelled
    from mono_quant_gui.run.worker import Task
    from mono_quant_gui.window import dialogs

    def until_cancelled(ctx):
        while not ctx.cancel.is_set():
            time.sleep(0.01)
        raise Cancelled("cancelled")

    asked = []
    monkeypatch.setattr(dialogs, "confirm_quit", lambda parent, busy: asked.append(busy) or False)
    with qtbot.waitSignal(window.runner.started, timeout=10_000):
        window.runner.submit(Task("quantize", "Quantizing", until_cancelled))
    window.close()
    assert asked == ["quantizing"]
    assert window.isVisible() and window.runner.current is not None  # still running, nothing lost
    monkeypatch.setattr(dialogs, "confirm_quit", lambda parent, busy: asked.append(busy) or True)
    window.close()
    assert asked == ["quantizing", "quantizing"] and not window.isVisible()
    assert window.runner.current is None or window.runner.current.cancel.is_set()


def test_quitting_while_idle_asks_nothing(window, monkeypatch):
    from mono_quant_gui.window import dialogs

    monkeypatch.setattr(dialogs, "confirm_quit", lambda parent, busy: pytest.fail("asked while idle"))
    window.close()
    assert not window.isVisible()
