"""The queue pane on a real Ray cluster: a private local instance on 127.0.0.1, started once for the
module and stopped at its end (``RayCluster("local")``).

Remote jobs run several at once and show their host and progress; their tensors equal a local
run's bit for bit; Stop cancels every running remote job within seconds, without a partial output;
switching back to this computer runs the next job here; a wrong address fails at once with the
engine's message and the jobs stay queued.
"""

from __future__ import annotations

import os
import socket
import time

import pytest
from test_gui_queue_run import RUN_TIMEOUT_MS, statuses, template, write_project

from mono_quant_core.cluster import RayCluster
from mono_quant_core.jobs import run_job
from mono_quant_gui.queue import CANCELLED, DONE, QUEUED, RUNNING, QueueDock, jobs_from_checkpoints
from mono_quant_gui.queue.model import HOST
from mono_quant_gui.queue.target import LOCAL, QueueTarget

LOCAL_RAY = QueueTarget(remote=True, address="local", concurrency=2)


class Shared:
    """The module's connected instance, handed to each test's queue; closing it is the module's job."""

    def __init__(self, cluster: RayCluster):
        self.cluster = cluster
        self.made = 0

    def __call__(self, address: str, concurrency: int | None) -> Shared:
        assert (address, concurrency) == ("local", 2)
        self.made += 1
        return self

    def connect(self, timeout_s: float = 15.0):
        return self.cluster.connect(timeout_s)

    def default_concurrency(self) -> int:
        return self.cluster.default_concurrency()

    def run_job(self, job, progress=None, cancel=None, on_event=None):
        return self.cluster.run_job(job, progress=progress, cancel=cancel, on_event=on_event)

    def close(self) -> None:
        pass


def make_dock(qtbot, factory=None) -> QueueDock:
    dock = QueueDock(cluster_factory=factory)
    qtbot.addWidget(dock)
    return dock


def run_all(dock, qtbot, timeout=RUN_TIMEOUT_MS) -> None:
    with qtbot.waitSignal(dock.runner.running_changed, timeout=timeout, check_params_cb=lambda r: not r):
        dock.run_all.trigger()


def cell(dock, entry_id: str, column: int) -> str:
    return dock.model.index(dock.model.row_of(entry_id), column).data()


def test_a_wrong_address_fails_at_once_and_the_jobs_stay_queued(data_home, qtbot, tmp_path):
    """Before the module's instance starts: this process holds one Ray connection at a time."""
    dock = make_dock(qtbot)  # the real RayCluster, made and connected on the queue's worker thread
    try:
        dock.set_target(QueueTarget(remote=True, address="ray://127.0.0.1:1"))
        files = write_project(tmp_path)
        dock.add_jobs(jobs_from_checkpoints([tmp_path / "ckpt0.pt"], template(files)))
        started = time.monotonic()
        run_all(dock, qtbot, timeout=15_000)
        assert time.monotonic() - started < 10
        assert statuses(dock) == [QUEUED]
        assert dock.details.toPlainText().startswith(
            "Could not connect to the Ray cluster: ray://127.0.0.1:1: cannot reach 127.0.0.1:1:"
        )
    finally:
        assert dock.shutdown()


@pytest.fixture(scope="module")
def ray_local():
    cluster = RayCluster("local", num_cpus=2)
    cluster.connect(timeout_s=120)
    yield Shared(cluster)
    cluster.close()


@pytest.fixture
def dock(data_home, qtbot, ray_local):
    panel = make_dock(qtbot, ray_local)
    panel.set_target(LOCAL_RAY)
    yield panel
    assert panel.shutdown(), "the queue's worker threads did not stop"


def test_remote_jobs_show_host_and_progress_and_equal_local_runs(dock, qtbot, tmp_path):
    from safetensors.torch import load_file

    files = write_project(tmp_path, samples=6)
    jobs = jobs_from_checkpoints([tmp_path / f"ckpt{i}.pt" for i in range(3)], template(files, mode="static"))
    ids = dock.add_jobs(jobs)
    seen: dict[str, list[tuple[int, int]]] = {i: [] for i in ids}
    at_once: list[int] = []
    dock.runner.progress.connect(lambda i, done, total, _m: seen[i].append((done, total)))
    dock.runner.started.connect(lambda _i: at_once.append(statuses(dock).count(RUNNING)))
    run_all(dock, qtbot)

    assert statuses(dock) == [DONE, DONE, DONE], [e.message for e in dock.model.entries()]
    assert max(at_once) == 2  # two at once: the concurrency setting
    host = socket.gethostname()
    assert [cell(dock, i, HOST) for i in ids] == [host] * 3
    assert all(any(total > 0 and done > 0 for done, total in seen[i]) for i in ids), seen
    assert "1 node, 2 CPUs, 0 GPUs" in dock.target_label.text()
    for job in dock.model.entries():
        local = run_job(job.job.replace(output=job.job.output + ".local.safetensors"))
        got, want = load_file(job.job.output), load_file(local.output)
        assert got.keys() == want.keys() and all(got[k].equal(want[k]) for k in want)


def test_stop_cancels_the_running_remote_jobs_within_seconds(dock, qtbot, tmp_path):
    files = write_project(tmp_path, samples=40, delay=0.25)  # 10 s a job: still running at Stop
    jobs = jobs_from_checkpoints([tmp_path / f"ckpt{i}.pt" for i in range(3)], template(files, mode="static"))
    ids = dock.add_jobs(jobs)
    dock.run_all.trigger()
    qtbot.waitUntil(
        lambda: all(dock.model.find(i).progress > 0 for i in ids[:2]) and statuses(dock).count(RUNNING) == 2,
        timeout=RUN_TIMEOUT_MS,
    )
    stopped_at = time.monotonic()
    with qtbot.waitSignal(dock.runner.running_changed, timeout=10_000, check_params_cb=lambda r: not r):
        dock.stop.trigger()
    assert time.monotonic() - stopped_at < 8  # the jobs run 10 s
    assert statuses(dock) == [CANCELLED, CANCELLED, QUEUED]
    # No output, partial or whole, at the output path, nor a temporary file beside it.
    assert not [n for n in os.listdir(tmp_path) if any(os.path.basename(j.output) in n for j in jobs)]


def test_switching_back_to_this_computer(dock, qtbot, tmp_path, ray_local):
    files = write_project(tmp_path)
    first, second = jobs_from_checkpoints([tmp_path / "ckpt0.pt", tmp_path / "ckpt1.pt"], template(files))
    (remote_id,) = dock.add_jobs([first])
    run_all(dock, qtbot)
    assert cell(dock, remote_id, HOST) == socket.gethostname()
    made = ray_local.made
    dock.set_target(LOCAL)
    (local_id,) = dock.add_jobs([second])
    run_all(dock, qtbot)
    assert dock.model.find(local_id).status == DONE and cell(dock, local_id, HOST) == "this computer"
    assert ray_local.made == made and dock.target_row.isHidden()
