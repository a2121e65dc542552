"""The Runner: fixed signal vocabulary, errors and cancellation as signals, one task at a time."""

from __future__ import annotations

import threading

import pytest
from PySide6.QtCore import QThread

from mono_quant_core.errors import CheckpointError
from mono_quant_core.report import LayerReport
from mono_quant_gui.run.worker import Runner, Task


@pytest.fixture
def runner(qapp):
    r = Runner()
    yield r
    assert r.shutdown(5000)


def record(runner):
    """Every signal of the runner's vocabulary, as (name, args), in arrival order."""
    seen = []
    for name in ("started", "progress", "layer_done", "finished", "errored", "cancelled"):
        getattr(runner, name).connect(lambda *args, n=name: seen.append((n, args)))
    return seen


def test_a_task_runs_off_the_gui_thread_and_reports_in_order(runner, qtbot):
    threads = []
    seen = record(runner)

    def work(ctx):
        threads.append(QThread.currentThread())
        ctx.progress(1, 2, "half")
        ctx.on_layer(LayerReport("fc", "Linear", "int8", weight_sqnr_db=40.0))
        ctx.progress(2, 2, "done")
        return 42

    with qtbot.waitSignal(runner.finished):
        task = runner.submit(Task("t", "Test", work))
    assert [n for n, _ in seen] == ["started", "progress", "layer_done", "progress", "finished"]
    assert seen[0][1] == (task,)
    assert seen[1][1] == (1, 2, "half") and seen[3][1] == (2, 2, "done")
    assert seen[2][1][0].name == "fc" and seen[-1][1] == (42,)
    assert threads and threads[0] is not QThread.currentThread()
    qtbot.waitUntil(lambda: not runner.busy)


def test_engine_errors_and_bugs_become_errored_with_details(runner, qtbot):
    def engine_error(ctx):
        raise CheckpointError("ckpt.pt: not a checkpoint")

    def bug(ctx):
        return {}["missing"]

    with qtbot.waitSignal(runner.errored) as blocker:
        runner.submit(Task("t", "Loading", engine_error))
    message, details = blocker.args
    assert message == "ckpt.pt: not a checkpoint"
    assert "Traceback" in details and "CheckpointError" in details
    with qtbot.waitSignal(runner.errored) as blocker:
        runner.submit(Task("t", "Loading", bug))
    assert blocker.args[0] == "Loading failed: KeyError: 'missing'"
    errors = []
    with qtbot.waitSignal(runner.errored):
        runner.submit(Task("t", "Loading", bug, on_error=lambda message, details: errors.append(message)))
    assert errors == ["Loading failed: KeyError: 'missing'"]  # the task's own handler ran


def test_sys_exit_in_a_user_script_does_not_end_the_app(runner, qtbot):
    def exits(ctx):
        raise SystemExit(3)

    with qtbot.waitSignal(runner.errored) as blocker:
        runner.submit(Task("t", "Running script", exits))
    assert blocker.args[0] == "Running script failed: SystemExit: 3"


def test_cancel_stops_at_the_next_check_and_the_runner_is_ready_again(runner, qtbot):
    inside = threading.Event()
    release = threading.Event()
    checks_after_cancel = []

    def long(ctx):
        for i in range(1000):
            inside.set()
            release.wait(5)
            checks_after_cancel.append(i)
            ctx.cancel.check()
        return "not cancelled"

    runner.submit(Task("run", "Long", long))
    qtbot.waitUntil(inside.is_set)
    with qtbot.waitSignal(runner.cancelled):
        runner.cancel()
        release.set()
    assert len(checks_after_cancel) == 1  # stopped at the first check after cancel()
    with qtbot.waitSignal(runner.finished) as blocker:
        runner.submit(Task("run", "Again", lambda ctx: "second"))
    assert blocker.args == ["second"]


def test_tasks_queue_one_at_a_time_and_busy_changes_once(runner, qtbot):
    order = []
    busy = []
    runner.busy_changed.connect(busy.append)
    with qtbot.waitSignals([runner.finished] * 3, order="strict"):
        for name in "abc":
            runner.submit(Task("t", name, lambda ctx, n=name: order.append(n) or n))
        assert runner.has("t") and not runner.has("other")
    qtbot.waitUntil(lambda: not runner.busy)
    assert order == ["a", "b", "c"]
    assert busy == [True, False]


def test_progress_bursts_are_throttled_but_the_last_step_arrives(runner, qtbot):
    seen = []
    runner.progress.connect(lambda d, t, m: seen.append(d))

    def burst(ctx):
        for i in range(1, 10_001):
            ctx.progress(i, 10_000, "step")

    with qtbot.waitSignal(runner.finished):
        runner.submit(Task("t", "Burst", burst))
    assert seen[-1] == 10_000
    assert len(seen) < 200  # 10,000 callbacks, at most one signal per 30 ms plus the last


def test_a_cancelled_token_before_start_gives_cancelled(runner, qtbot):
    task = Task("t", "Never", lambda ctx: pytest.fail("ran"))
    task.cancel.cancel()
    with qtbot.waitSignal(runner.cancelled):
        runner.submit(task)
