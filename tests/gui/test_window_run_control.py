"""Cancel within one sample, then run again; one run at a time; the event loop never stalls during a run."""

from __future__ import annotations

import threading
import time

from PySide6.QtCore import QTimer

from conftest import wait_idle

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
    assert window.actions.cancel.isEnabled() and not window.actions.quantize.isEnabled()
    with qtbot.waitSignal(window.runner.cancelled, timeout=30_000):
        window.actions.cancel.trigger()
        calls_at_cancel = model_class.calls
        gate.set()
    assert model_class.calls == calls_at_cancel  # the sample in flight finished; no further one started
    assert window.session.result is None
    assert window.dashboard.output_card.detail.text() == "cancelled"
    assert "cancelled" in window.statusBar().currentMessage()
    wait_idle(qtbot, window)
    assert window.actions.quantize.isEnabled() and not window.actions.cancel.isEnabled()
    model_class.gate = None
    with qtbot.waitSignal(window.runner.finished, timeout=30_000):
        window.actions.quantize.trigger()
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


def test_the_event_loop_never_stalls_during_a_run(window, qtbot):
    """A 10 ms heartbeat timer runs through a whole static run; threshold: no gap over 100 ms."""
    window.open_demo("transformer")
    wait_idle(qtbot, window)
    window.settings_panel.combos["mode"].setCurrentText("static")
    window.settings_panel.combos["observer"].setCurrentText("histogram")
    ticks: list[float] = []
    heartbeat = QTimer(interval=10)
    heartbeat.timeout.connect(lambda: ticks.append(time.perf_counter()))
    window.runner.started.connect(lambda task: heartbeat.start())
    with qtbot.waitSignal(window.runner.finished, timeout=60_000):
        window.start_quantize()
    heartbeat.stop()
    ticks.append(time.perf_counter())
    gaps = [b - a for a, b in zip(ticks, ticks[1:])]
    assert len(ticks) > 5, "the run was too short to judge"
    assert max(gaps) < 0.100, f"the event loop stalled for {max(gaps) * 1000:.0f} ms"
