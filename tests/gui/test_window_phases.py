"""The window follows the engine's run plan: the calibration card and the time left come from
phase events (no phase guessed from step counts, no private engine names)."""

from __future__ import annotations

from conftest import wait_idle

from mono_quant_core.progress import PhaseEvent, RunPlan

RUN_TIMEOUT = 60_000


def test_plan_and_phases_drive_the_calibration_card_and_the_time_left(window, qtbot):
    window.open_demo("cnn")
    wait_idle(qtbot, window)
    window.settings_panel.combos["mode"].setCurrentText("static")
    wait_idle(qtbot, window)
    items, etas, cards = [], [], []

    def seen(task, item):  # connected after the window's own slot: sees what it just showed
        items.append(item)
        etas.append(window.run_status.eta.text())
        cards.append((window.dashboard.calib_bar.value(), window.dashboard.calib_bar.maximum()))

    window.runner.phase.connect(seen)
    with qtbot.waitSignal(window.runner.finished, timeout=RUN_TIMEOUT):
        window.start_quantize()
    plan = items[0]
    assert isinstance(plan, RunPlan)
    n = plan.units("calibrate")
    assert n == window.session.result.report.calibration_samples > 0
    events = [e for e in items[1:] if isinstance(e, PhaseEvent)]
    assert [e.phase for e in events if e.done == 0] == ["calibrate", "quantize", "validate", "metric"]
    calibrating = [c for e, c in zip(items[1:], cards[1:], strict=True) if e.phase == "calibrate"]
    assert calibrating[0] == (0, n) and calibrating[-1] == (n, n)
    # Once a unit was measured, the status bar says how long is left.
    measured = [t for e, t in zip(items[1:], etas[1:], strict=True) if e.done > 0]
    assert measured and all(t.endswith(" left") for t in measured)
