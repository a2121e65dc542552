"""The main window and the batch queue: Add to Queue, dropped checkpoints and job files, Save As vs the
queue, closing during a queue run."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from conftest import wait_idle
from gui_helpers import MLP, PROBE_MODULE, drop_paths
from PySide6.QtCore import QStandardPaths, Qt
from PySide6.QtGui import QKeySequence
from PySide6.QtWidgets import QToolBar

from mono_quant_core.config import QuantConfig
from mono_quant_core.jobs import Job
from mono_quant_gui.__main__ import apply_args, parse_args
from mono_quant_gui.demo import demo
from mono_quant_gui.queue import QUEUED, RUNNING, QueueStore, output_claims
from mono_quant_gui.queue.runner import CLOSED
from mono_quant_gui.window import dialogs

RUN_TIMEOUT = 60_000


def write_project(root: Path, checkpoints: int = 3, samples: int = 4, delay: float = 0.0) -> Path:
    """model.py, ckpt0..N.pt and calib/ in ``root``; returns the script."""
    import torch

    (root / "calib").mkdir()
    (root / "model.py").write_text(MLP.format(delay=delay, probe=PROBE_MODULE), encoding="utf-8")
    g = torch.Generator().manual_seed(0)
    for i in range(checkpoints):
        torch.save(
            {
                "fc1.weight": torch.randn(32, 16, generator=g),
                "fc1.bias": torch.randn(32, generator=g),
                "fc2.weight": torch.randn(4, 32, generator=g),
                "fc2.bias": torch.randn(4, generator=g),
            },
            root / f"ckpt{i}.pt",
        )
    for i in range(samples):
        torch.save(torch.randn(4, 16, generator=g), root / "calib" / f"x{i}.pt")
    return root / "model.py"


def open_project(window, qtbot, root: Path, **kwargs) -> Path:
    script = write_project(root, **kwargs)
    window.set_calibration_folder(str(root / "calib"))
    window.open_script(str(script), str(root / "ckpt0.pt"))
    wait_idle(qtbot, window)
    assert window.session.loaded is not None
    return script


def queue_is_shown(window) -> bool:
    return window.queue_dock.isVisible() and not window.queue_panel.visibleRegion().isEmpty()


def test_add_to_queue_builds_the_job_of_the_current_settings(window, qtbot, tmp_path):
    script = open_project(window, qtbot, tmp_path)
    tree = window.modules.model
    tree.setData(tree.row_of("fc2"), Qt.CheckState.Unchecked, Qt.ItemDataRole.CheckStateRole)
    window.settings_panel.set_values(
        {
            "dtype": "int8",
            "mode": "static",
            "scheme": "asymmetric",
            "observer": "percentile",
            "samples": 3,
            "min_output_sqnr_db": 12.0,
        }
    )
    assert not queue_is_shown(window)
    window.commands.add_to_queue.trigger()
    (entry,) = window.queue_panel.model.entries()
    job = entry.job
    assert queue_is_shown(window)
    assert job.script == str(script.resolve())
    assert job.checkpoint == str((tmp_path / "ckpt0.pt").resolve())
    assert job.calibration_folder == str(tmp_path / "calib") and job.samples == 3
    assert job.entry == "MLP" and job.entry_kwargs == {} and job.strict
    assert job.output == str(tmp_path / "ckpt0.int8.safetensors")
    assert entry.name == "ckpt0.int8" and entry.status == QUEUED
    expected = window.settings_panel.config(["fc1"])
    assert job.config == expected and job.config.layers == ["fc1"]
    assert (job.config.mode, job.config.scheme, job.config.observer, job.config.min_output_sqnr_db) == (
        "static",
        "asymmetric",
        "percentile",
        12.0,
    )
    again = Job.from_toml(job.to_toml())  # what the queue file and an export hold
    assert again.config == expected and again.config.layers == ["fc1"]
    assert again == job

    # The Queue pane's own button does the same; a second job does not reuse the first one's output.
    window.queue_panel.add_current.trigger()
    second = window.queue_panel.model.entries()[1].job
    assert second.output == str(tmp_path / "ckpt0.int8-2.safetensors")
    assert second.replace(output=job.output) == job


def test_the_demo_is_queued_with_its_output_outside_the_application(window, qtbot, tmp_path, monkeypatch):
    home = tmp_path / "home"
    (home / "Documents").mkdir(parents=True)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("XDG_DOCUMENTS_DIR", raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    documents = QStandardPaths.writableLocation(QStandardPaths.StandardLocation.DocumentsLocation)
    assert documents == str(home / "Documents")
    window.open_demo("cnn")
    wait_idle(qtbot, window)
    (entry_id,) = window.add_current_to_queue()
    job = window.queue_panel.model.find(entry_id).job
    assert job.checkpoint == str(demo("cnn").checkpoint.resolve())
    assert job.calibration_folder == str(demo("cnn").calibration)
    assert job.output == str(home / "Documents" / "model.int8.safetensors")


def test_the_add_to_queue_action(window, qtbot, tmp_path):
    action = window.commands.add_to_queue
    toolbar = window.findChild(QToolBar, "main_toolbar")
    assert action in toolbar.actions()
    assert action.shortcut() == QKeySequence("Ctrl+Shift+R") and not action.icon().isNull()
    assert not action.isEnabled() and action.toolTip() == "Open a model script first (Ctrl+O)"
    assert not window.queue_panel.add_current.isEnabled()
    action.trigger()  # disabled: nothing happens
    window.add_current_to_queue()  # called anyway: refused with the reason
    assert window.queue_panel.model.entries() == []
    assert window.statusBar().currentMessage() == "Not queued: Open a model script first (Ctrl+O)"

    open_project(window, qtbot, tmp_path)
    assert action.isEnabled() and window.queue_panel.add_current.isEnabled()
    assert "Ctrl+Shift+R" in action.toolTip()
    window.modules.model.set_checked_where(False)
    assert not action.isEnabled() and action.toolTip() == "Tick at least one layer in the module tree"
    window.modules.model.set_checked_where(True)
    assert action.isEnabled()
    window.open_script(str(tmp_path / "model.py"), str(tmp_path / "ckpt1.pt"))  # loading again
    assert not action.isEnabled() and action.toolTip() == "Wait for the model to finish loading"
    wait_idle(qtbot, window)
    assert action.isEnabled()


def test_dropping_three_checkpoints_queues_three_jobs(window, qtbot, tmp_path):
    open_project(window, qtbot, tmp_path, checkpoints=4)
    window.settings_panel.set_values({"dtype": "fp16", "mode": "weight-only"})
    loads = []
    window.runner.started.connect(lambda task: loads.append(task.kind))
    checkpoints = [str(tmp_path / f"ckpt{i}.pt") for i in (1, 2, 3)]
    drop_paths(window.dashboard, checkpoints)
    jobs = [e.job for e in window.queue_panel.model.entries()]
    assert [j.checkpoint for j in jobs] == checkpoints
    assert [j.output for j in jobs] == [str(tmp_path / f"ckpt{i}.fp16.safetensors") for i in (1, 2, 3)]
    assert all(j.config == window.settings_panel.config(["fc1", "fc2"]) for j in jobs)
    assert all(j.script == str(tmp_path / "model.py") for j in jobs)
    assert queue_is_shown(window)
    assert loads == [] and window.session.checkpoint == str(tmp_path / "ckpt0.pt")  # the window keeps its model

    # One checkpoint dropped on the Queue pane is queued too (on the window it would open).
    drop_paths(window.queue_panel.table.viewport(), [str(tmp_path / "ckpt0.pt")])
    assert [e.job.checkpoint for e in window.queue_panel.model.entries()][-1] == str(tmp_path / "ckpt0.pt")
    assert loads == []


def test_dropped_checkpoints_need_a_model_script(window, qtbot, tmp_path):
    write_project(tmp_path)
    checkpoints = [str(tmp_path / f"ckpt{i}.pt") for i in range(3)]
    drop_paths(window.dashboard, checkpoints)
    assert window.queue_panel.model.entries() == []
    assert window.last_error.windowTitle() == "Could not queue the checkpoints"
    assert window.last_error.text().startswith("Open a model script first (Ctrl+O): each checkpoint")
    window.last_error.close()

    # Dropped together with the script, they are queued with it; the script opens with the first one.
    drop_paths(window.dashboard, [*checkpoints, str(tmp_path / "model.py")])
    jobs = [e.job for e in window.queue_panel.model.entries()]
    assert [j.checkpoint for j in jobs] == checkpoints
    assert all(j.script == str(tmp_path / "model.py") and j.config.layers is None for j in jobs)
    assert window.session.checkpoint == checkpoints[0]
    wait_idle(qtbot, window)


def test_job_files_are_queued_from_a_drop_and_the_command_line(window, qtbot, tmp_path):
    script = write_project(tmp_path)
    paths = []
    for i in range(3):
        job = Job(
            script=str(script),
            checkpoint=str(tmp_path / f"ckpt{i}.pt"),
            output=f"out{i}.safetensors",
            config=QuantConfig(dtype="bf16", mode="weight-only"),
        )
        job.save(tmp_path / f"job{i}.toml")
        paths.append(str(tmp_path / f"job{i}.toml"))
    drop_paths(window.log_view.viewport(), paths[:2])
    entries = window.queue_panel.model.entries()
    assert [e.name for e in entries] == ["job0", "job1"]
    assert entries[1].job == Job.load(paths[1])
    assert window.session.script is None  # several job files are only queued
    assert queue_is_shown(window)

    # mono-quant-gui JOB.toml: queued, and the window opens it
    apply_args(window, parse_args([paths[2]]))
    assert [e.name for e in window.queue_panel.model.entries()] == ["job0", "job1", "job2"]
    assert window.session.script == str(script) and window.session.checkpoint == str(tmp_path / "ckpt2.pt")
    wait_idle(qtbot, window)
    assert window.settings_panel.values()["dtype"] == "bf16"


def test_save_as_is_refused_while_the_queue_writes_that_file(window, qtbot, tmp_path, monkeypatch):
    import mono_quant_core

    window.open_demo("cnn")
    wait_idle(qtbot, window)
    with qtbot.waitSignal(window.runner.finished, timeout=RUN_TIMEOUT):
        window.start_quantize()
    target = tmp_path / "digits.safetensors"
    monkeypatch.setattr(dialogs, "ask_save_path", lambda parent, suggested: (str(target), dialogs.SAVE_FILTERS[0]))
    with (
        output_claims.claimed(target, 'the queue job "digits.int8"'),
        qtbot.waitSignal(window.runner.errored, timeout=RUN_TIMEOUT),
    ):
        window.commands.save_as.trigger()
    assert not target.exists()
    assert window.last_error.windowTitle() == "Could not save"
    assert window.last_error.text() == (
        f'{target}: the queue job "digits.int8" is writing this file right now; '
        "wait for it to finish or choose another output file"
    )
    window.last_error.close()

    # Once the queue is done with it, Save As writes it, holding the file while it does.
    writers = []
    save = mono_quant_core.save_quantized
    monkeypatch.setattr(
        mono_quant_core,
        "save_quantized",
        lambda result, path: writers.append(output_claims.writer_of(path)) or save(result, path),
    )
    with qtbot.waitSignal(window.runner.finished, timeout=RUN_TIMEOUT):
        window.commands.save_as.trigger()
    assert target.is_file() and writers == ["Save As"]
    assert output_claims.writer_of(target) is None


@pytest.mark.slow
def test_closing_the_window_during_a_queue_run_keeps_the_job_queued(window, qtbot, tmp_path, monkeypatch):
    script = write_project(tmp_path, checkpoints=1, samples=40, delay=0.05)
    job = Job(
        script=str(script),
        checkpoint=str(tmp_path / "ckpt0.pt"),
        output=str(tmp_path / "out.safetensors"),
        calibration_folder=str(tmp_path / "calib"),
        config=QuantConfig(mode="static"),
    )
    (entry_id,) = window.queue_panel.add_jobs([job])
    store_path = window.queue_panel.store.path
    window.queue_panel.run_all.trigger()
    qtbot.waitUntil(lambda: window.queue_panel.model.find(entry_id).status == RUNNING, timeout=RUN_TIMEOUT)
    qtbot.waitUntil(lambda: window.queue_panel.model.find(entry_id).progress > 0, timeout=RUN_TIMEOUT)
    asked = []
    monkeypatch.setattr(dialogs, "confirm_quit", lambda parent, busy: asked.append(busy) or True)
    window.close()
    assert asked == ["the queue's jobs"]  # the user was asked, and chose to quit
    assert not window.queue_panel.runner.running
    assert not os.path.exists(job.output)
    store = QueueStore(store_path)  # the lock was released: a new window owns the queue
    try:
        assert store.owner
        entries, _message = store.load()
    finally:
        store.close()
    assert [(e.id, e.status, e.message) for e in entries] == [(entry_id, QUEUED, CLOSED)]
    assert entries[0].job == window.queue_panel.model.find(entry_id).job
