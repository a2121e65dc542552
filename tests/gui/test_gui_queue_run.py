"""Running the queue: real jobs on a tiny MLP, failures that do not stop the rest, stop, retry, the output guard.

Each job quantizes a 2-layer MLP with 3 calibration tensors (well under a
second); the tests wait on the runner's signals.
"""

from __future__ import annotations

import json
import os
import sys
import threading

import pytest
from gui_helpers import MLP, PROBE_MODULE
from PySide6.QtCore import Qt

from mono_quant_core.config import QuantConfig
from mono_quant_core.jobs import Job, run_job
from mono_quant_gui.queue import CANCELLED, DONE, FAILED, QUEUED, QueueDock, jobs_from_checkpoints, output_claims
from mono_quant_gui.queue.model import MESSAGE

RUN_TIMEOUT_MS = 60_000


@pytest.fixture
def dock(data_home, qtbot):
    panel = QueueDock()
    qtbot.addWidget(panel)
    yield panel
    assert panel.shutdown(), "the queue's worker thread did not stop"


def write_project(root, samples: int = 3, delay: float = 0.0) -> dict[str, str]:
    """model.py, ckpt0..3.pt (different weights), a calibration folder; returns their paths."""
    import torch

    (root / "calib").mkdir()
    (root / "model.py").write_text(MLP.format(delay=delay, probe=PROBE_MODULE), encoding="utf-8")
    g = torch.Generator().manual_seed(0)
    for i in range(4):
        state = {
            "fc1.weight": torch.randn(32, 16, generator=g) * 0.3,
            "fc1.bias": torch.randn(32, generator=g),
            "fc2.weight": torch.randn(4, 32, generator=g) * 0.3,
            "fc2.bias": torch.randn(4, generator=g),
        }
        torch.save(state, root / f"ckpt{i}.pt")
    for i in range(samples):
        torch.save(torch.randn(4, 16, generator=g), root / "calib" / f"x{i}.pt")
    return {"script": str(root / "model.py"), "calib": str(root / "calib")}


def template(files: dict[str, str], **settings) -> Job:
    """The main window's current settings, as the Job it would supply."""
    return Job(
        script=files["script"],
        checkpoint=None,
        output=files["script"] + ".safetensors",
        calibration_folder=files["calib"],
        config=QuantConfig(**settings),
    )


def run_all(dock: QueueDock, qtbot) -> None:
    with qtbot.waitSignal(
        dock.runner.running_changed, timeout=RUN_TIMEOUT_MS, check_params_cb=lambda running: not running
    ):
        dock.run_all.trigger()


def statuses(dock: QueueDock) -> list[str]:
    return [e.status for e in dock.model.entries()]


def test_six_jobs_two_broken(dock, qtbot, tmp_path):
    files = write_project(tmp_path)
    (tmp_path / "corrupt.pt").write_bytes(b"\x00this is not a checkpoint" * 10)
    good = jobs_from_checkpoints(
        [tmp_path / f"ckpt{i}.pt" for i in range(4)] + [tmp_path / "corrupt.pt"], template(files)
    )
    missing = good[0].replace(script=str(tmp_path / "missing.py"), output=str(tmp_path / "missing.safetensors"))
    jobs = [good[0], missing, good[1], good[4], good[2], good[3]]
    ids = dock.add_jobs(jobs)
    assert len(ids) == 6 and dock.pages.currentIndex() == 1

    run_all(dock, qtbot)

    assert statuses(dock) == [DONE, FAILED, DONE, FAILED, DONE, DONE]
    for i in range(4):
        assert os.path.getsize(tmp_path / f"ckpt{i}.int8.safetensors") > 0
    assert not (tmp_path / "missing.safetensors").exists() and not (tmp_path / "corrupt.int8.safetensors").exists()
    entries = dock.model.entries()
    assert entries[1].message == f"{tmp_path / 'missing.py'}: no such model script"
    assert "corrupt.pt" in entries[3].message and entries[3].details  # the traceback, for the details area
    assert entries[0].message.startswith("done in ") and "output SQNR" in entries[0].message
    assert dock.model.index(1, MESSAGE).data(Qt.ItemDataRole.ToolTipRole) == entries[1].message
    dock.select_ids([ids[3]])
    assert entries[3].message in dock.details.toPlainText()
    with open(dock.store.path, encoding="utf-8") as f:
        assert [j["status"] for j in json.load(f)["jobs"]] == statuses(dock)

    # The queue writes what the command line (the same run_job) writes, tensor for tensor.
    from safetensors.torch import load_file

    direct = run_job(good[2].replace(output=str(tmp_path / "direct.safetensors")))
    queued, cli = load_file(good[2].output), load_file(direct.output)
    assert queued.keys() == cli.keys() and all(queued[k].equal(cli[k]) for k in cli)

    # Still usable: fix the missing script, retry it, run again.
    (tmp_path / "missing.py").write_text(MLP.format(delay=0.0, probe=PROBE_MODULE), encoding="utf-8")
    dock.select_ids([ids[1]])
    assert dock.retry_selected.isEnabled()
    dock.retry_selected.trigger()
    assert statuses(dock)[1] == QUEUED
    run_all(dock, qtbot)
    assert statuses(dock) == [DONE, DONE, DONE, FAILED, DONE, DONE]
    assert (tmp_path / "missing.safetensors").exists()


class SampleProbe:
    """Counts the model's forward passes (one per calibration sample) begun and ended, on any thread;
    the forward pass number ``hold_at`` waits inside the model until ``release`` is set."""

    def __init__(self, hold_at: int):
        self.hold_at = hold_at
        self.begun = self.ended = 0
        self.holding = threading.Event()
        self.release = threading.Event()
        self._lock = threading.Lock()

    def begin(self) -> None:
        with self._lock:
            self.begun += 1
            hold = self.begun == self.hold_at
        if hold:
            self.holding.set()
            self.release.wait(30)

    def end(self) -> None:
        with self._lock:
            self.ended += 1


def test_stop_cancels_within_a_sample_and_ends_the_run(dock, qtbot, tmp_path, monkeypatch):
    """Stop while the third calibration sample is inside the model: that sample finishes, no further
    sample starts, the job is cancelled and the run ends (no timing involved)."""
    files = write_project(tmp_path, samples=40)
    first, second = jobs_from_checkpoints(
        [tmp_path / "ckpt0.pt", tmp_path / "ckpt1.pt"], template(files, mode="static")
    )
    probe = SampleProbe(hold_at=3)
    monkeypatch.setitem(sys.modules, PROBE_MODULE, probe)
    ids = dock.add_jobs([first, second])
    try:
        dock.run_all.trigger()
        qtbot.waitUntil(probe.holding.is_set, timeout=RUN_TIMEOUT_MS)
        assert dock.runner.current_id == ids[0] and dock.stop.isEnabled()
        begun_at_stop, ended_at_stop = probe.begun, probe.ended
        assert (begun_at_stop, ended_at_stop) == (3, 2)  # the third sample is in flight
        with qtbot.waitSignals(
            [dock.runner.cancelled, dock.runner.running_changed], timeout=RUN_TIMEOUT_MS, order="strict"
        ):
            dock.stop.trigger()
            probe.release.set()  # the sample in flight may now finish
    finally:
        probe.release.set()
    # Within one sample: the one in flight finished, and not one more began.
    assert probe.begun - begun_at_stop == 0, f"{probe.begun - begun_at_stop} samples began after Stop"
    assert probe.ended - ended_at_stop == 1
    assert statuses(dock) == [CANCELLED, QUEUED]
    assert not os.path.exists(first.output) and not dock.runner.running
    assert dock.runner.retry(ids) == [ids[0]] and statuses(dock) == [QUEUED, QUEUED]


def test_an_output_being_written_elsewhere_is_refused(dock, qtbot, tmp_path):
    files = write_project(tmp_path)
    (job,) = jobs_from_checkpoints([tmp_path / "ckpt0.pt"], template(files, dtype="fp16"))
    (entry_id,) = dock.add_jobs([job])
    with output_claims.claimed(job.output, "Save As in the main window"):
        run_all(dock, qtbot)
    entry = dock.model.find(entry_id)
    assert entry.status == FAILED
    assert entry.message == (
        f"{job.output}: Save As in the main window is writing this file right now; "
        "wait for it to finish or choose another output file"
    )
    dock.runner.retry([entry_id])
    run_all(dock, qtbot)
    assert dock.model.find(entry_id).status == DONE and os.path.exists(job.output)
    assert output_claims.writer_of(job.output) is None


def test_the_queue_and_a_main_window_run_at_the_same_time(dock, qtbot, tmp_path):
    """Separate models on separate threads: both outputs equal those of runs made one at a time."""
    from functools import partial

    from safetensors.torch import load_file

    from mono_quant_gui.queue.runner import run_job_task
    from mono_quant_gui.run.worker import Runner, Task

    files = write_project(tmp_path, samples=10, delay=0.005)
    mine, queued = jobs_from_checkpoints([tmp_path / "ckpt0.pt", tmp_path / "ckpt1.pt"], template(files, mode="static"))
    reference = [run_job(j.replace(output=j.output + ".ref.safetensors")).output for j in (mine, queued)]
    window_runner = Runner()  # what the main window uses for its own runs
    try:
        dock.add_jobs([queued])
        with qtbot.waitSignals([window_runner.finished, dock.runner.finished], timeout=RUN_TIMEOUT_MS):
            window_runner.submit(Task("quantize", "Quantizing", partial(run_job_task, job=mine)))
            dock.run_all.trigger()
    finally:
        assert window_runner.shutdown()
    for job, ref in zip((mine, queued), reference, strict=True):
        got, want = load_file(job.output), load_file(ref)
        assert got.keys() == want.keys() and all(got[k].equal(want[k]) for k in want)
