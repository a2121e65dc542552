"""A queue run killed with SIGKILL: on the next start the job that was running is queued again, and runs.

The child process is the application's queue (a QueueDock with its store in
the same temporary data folder) running a job whose model factory blocks
while a flag file exists.  The parent polls the queue file, a plain file on
disk, for the job's ``running`` state, then kills the child.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

from PySide6.QtCore import QCoreApplication, QStandardPaths

from mono_quant_core.jobs import Job
from mono_quant_gui.queue import DONE, QUEUED, QueueModel, QueueRunner, QueueStore, default_queue_path
from mono_quant_gui.queue.store import INTERRUPTED

MODEL = """\
import os
import time

from torch import nn

FLAG = os.path.join(os.path.dirname(__file__), "slow.flag")


def build_model():
    deadline = time.monotonic() + 60
    while os.path.exists(FLAG) and time.monotonic() < deadline:  # the parent kills us meanwhile
        time.sleep(0.05)
    return nn.Sequential(nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 4))
"""

CHILD = """\
import sys

from PySide6.QtCore import QStandardPaths, QTimer
from PySide6.QtWidgets import QApplication

from mono_quant_core.jobs import Job
from mono_quant_gui.queue import QueueDock

app = QApplication([sys.argv[0]])
app.setOrganizationName(sys.argv[1])
app.setApplicationName(sys.argv[2])
QStandardPaths.setTestModeEnabled(True)
dock = QueueDock()
dock.add_jobs([Job.load(sys.argv[3])])
QTimer.singleShot(0, dock.run_all.trigger)
app.exec()
"""


def wait_for_status(path: str, status: str, child: subprocess.Popen, timeout_s: float = 60.0) -> None:
    """Poll the queue file until its first job has ``status`` (bounded; fails if the child exits)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert child.poll() is None, f"the child exited early: {child.stderr.read().decode(errors='replace')}"
        try:
            with open(path, encoding="utf-8") as f:
                jobs = json.load(f)["jobs"]
        except (OSError, json.JSONDecodeError, KeyError):
            jobs = []  # not written yet (the writes are atomic, so never half a file)
        if jobs and jobs[0]["status"] == status:
            return
        time.sleep(0.05)
    raise AssertionError(f"{path}: the job never reached {status!r} within {timeout_s} s")


def test_a_killed_run_comes_back_queued(qapp, qtbot, tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    QStandardPaths.setTestModeEnabled(True)
    try:
        (tmp_path / "model.py").write_text(MODEL, encoding="utf-8")
        (tmp_path / "slow.flag").touch()
        job = Job(script=str(tmp_path / "model.py"), output=str(tmp_path / "out.fp16.safetensors"))
        job.config.dtype = "fp16"
        job.save(tmp_path / "job.toml")
        (tmp_path / "child.py").write_text(CHILD, encoding="utf-8")
        queue_file = default_queue_path()
        assert queue_file.startswith(str(tmp_path))
        env = dict(os.environ, QT_QPA_PLATFORM="offscreen")
        child = subprocess.Popen(
            [
                sys.executable,
                str(tmp_path / "child.py"),
                QCoreApplication.organizationName(),
                QCoreApplication.applicationName(),
                str(tmp_path / "job.toml"),
            ],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        try:
            wait_for_status(queue_file, "running", child)
            os.kill(child.pid, signal.SIGKILL)
        finally:
            child.kill()
            child.wait(timeout=30)
            child.stderr.close()
        assert child.returncode == -signal.SIGKILL

        # The next start: the job is queued again (the dead process's lock is taken over).
        os.remove(tmp_path / "slow.flag")
        store = QueueStore()
        model = QueueModel()
        assert model.attach(store) == "1 job(s) stopped when mono-quant stopped and are queued again"
        assert store.owner
        (entry,) = model.entries()
        assert (entry.status, entry.message, entry.job) == (QUEUED, INTERRUPTED, Job.load(tmp_path / "job.toml"))

        runner = QueueRunner(model)
        with qtbot.waitSignal(runner.running_changed, timeout=60_000, check_params_cb=lambda running: not running):
            runner.run_all()
        assert model.entry(0).status == DONE and os.path.exists(tmp_path / "out.fp16.safetensors")
        assert runner.shutdown()
        store.close()
    finally:
        QStandardPaths.setTestModeEnabled(False)
