"""Garbage is collected on the GUI thread only: a collection on a worker thread can free a Qt
object off its own thread, which crashes the process (it did, in CI, inside a load task)."""

from __future__ import annotations

import gc

from conftest import wait_idle

from mono_quant_gui.run import tasks


def test_automatic_collection_is_off_and_a_gui_timer_collects(window, qtbot):
    from mono_quant_gui import app

    assert not gc.isenabled()
    collector = app._COLLECTOR
    assert collector is not None and collector.timer.isActive()
    gc.collect()
    junk = [[] for _ in range(gc.get_threshold()[0] + 10)]
    for item in junk:
        item.append(item)  # reference cycles: only a collection frees them
    del junk
    assert gc.get_count()[0] > gc.get_threshold()[0]
    qtbot.waitUntil(lambda: gc.get_count()[0] < gc.get_threshold()[0], timeout=5000)


def test_loading_a_model_settles_memory_on_the_gui_thread(window, qtbot, monkeypatch):
    import threading

    threads = []
    real = tasks.settle_memory
    monkeypatch.setattr(tasks, "settle_memory", lambda: (threads.append(threading.current_thread()), real()))
    window.open_demo("cnn")
    wait_idle(qtbot, window)
    assert threads == [threading.main_thread()]


def test_a_runner_collects_garbage_when_it_falls_idle(qtbot, monkeypatch):
    import threading

    from mono_quant_gui.run.worker import Runner, Task

    runner = Runner()
    collected = []
    real = gc.collect
    monkeypatch.setattr(gc, "collect", lambda *a: (collected.append(threading.current_thread()), real(*a))[1])
    try:
        with qtbot.waitSignal(runner.busy_changed, check_params_cb=lambda busy: not busy, timeout=10_000):
            runner.submit(Task("noop", "nothing", lambda ctx: 1))
        assert collected and set(collected) == {threading.main_thread()}
    finally:
        runner.shutdown()
