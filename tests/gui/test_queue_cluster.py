"""The queue on a cluster, with a fake cluster (threading and what the pane shows): several jobs at
once with their host and progress, Stop, a connection that fails, switching back to this computer,
interrupted remote jobs queued again, and Preferences (the setting persists; Test connection).

The fake runs each job with the real ``run_job`` here, on the worker thread that called it, like the
engine's ``RayCluster.run_job``; a gate holds every job at its first progress step until the test
opens it.  tests/gui/test_queue_cluster_ray.py drives a real private Ray instance end to end.
"""

from __future__ import annotations

import os
import threading
from types import SimpleNamespace

import pytest
from test_gui_queue_run import RUN_TIMEOUT_MS, statuses, template, write_project

from mono_quant_core.errors import Cancelled, ClusterError
from mono_quant_core.jobs import run_job
from mono_quant_gui.queue import CANCELLED, DONE, QUEUED, RUNNING, QueueDock, QueueStore, jobs_from_checkpoints
from mono_quant_gui.queue.model import HOST, PROGRESS
from mono_quant_gui.queue.runner import CLOSED
from mono_quant_gui.queue.store import INTERRUPTED
from mono_quant_gui.queue.target import LOCAL, QueueTarget

CLUSTER = QueueTarget(remote=True, address="ray://head.example:10001", concurrency=2)


class FakeCluster:
    """``RayCluster``'s interface; records the threads it was called on and how many jobs ran at once."""

    def __init__(self, address: str, concurrency: int | None, fail: str | None = None):
        self.address, self.concurrency, self.fail = address, concurrency, fail
        self.gate = threading.Event()
        self.held = threading.Semaphore(0)  # released once per job waiting at the gate
        self.threads: set[str] = set()
        self.lock = threading.Lock()
        self.now = self.most = self.jobs = 0
        self.closed = False

    def connect(self, timeout_s: float = 15.0):
        self.threads.add(threading.current_thread().name)
        if self.fail:
            raise ClusterError(self.fail, self.address)
        return SimpleNamespace(address=self.address, nodes=2, cpus=8.0, gpus=1.0, ray_version="2.60.0")

    def default_concurrency(self) -> int:
        return 8

    def run_job(self, job, progress=None, cancel=None, on_event=None):
        self.threads.add(threading.current_thread().name)
        with self.lock:
            self.jobs += 1
            self.now += 1
            self.most = max(self.most, self.now)
            host = f"node-{self.jobs}"
        try:
            on_event("host", host)
            on_event("log", f"inputs sent through the object store to {host}")
            progress(1, 4, "quantizing on the cluster")
            self.held.release()
            while not self.gate.wait(0.02):
                if cancel.is_set():
                    raise Cancelled("cancelled by the user")
            return run_job(job, progress=progress, cancel=cancel)
        finally:
            with self.lock:
                self.now -= 1

    def close(self) -> None:
        self.closed = True


class Factory:
    """``cluster_factory``: one FakeCluster per connection, kept for the test to look at."""

    def __init__(self, fail: str | None = None):
        self.fail = fail
        self.made: list[FakeCluster] = []

    def __call__(self, address: str, concurrency: int | None) -> FakeCluster:
        cluster = FakeCluster(address, concurrency, self.fail)
        self.made.append(cluster)
        return cluster

    @property
    def last(self) -> FakeCluster:
        return self.made[-1]


@pytest.fixture
def factory():
    return Factory()


@pytest.fixture
def dock(data_home, qtbot, factory):
    panel = QueueDock(cluster_factory=factory)
    qtbot.addWidget(panel)
    yield panel
    for cluster in factory.made:
        cluster.gate.set()
    assert panel.shutdown(), "the queue's worker threads did not stop"


def queue_jobs(dock, tmp_path, n: int) -> list[str]:
    files = write_project(tmp_path)
    jobs = jobs_from_checkpoints([tmp_path / f"ckpt{i}.pt" for i in range(n)], template(files))
    return dock.add_jobs(jobs)


def wait_held(qtbot, cluster: FakeCluster, n: int) -> None:
    """Wait, with the event loop running, until ``n`` remote jobs wait at the gate.

    Blocking the GUI thread here deadlocked when the connection's answer was still queued for
    it (the jobs are submitted only once it is handled): seen in CI."""
    held = [0]

    def enough() -> bool:
        while held[0] < n and cluster.held.acquire(blocking=False):
            held[0] += 1
        return held[0] >= n

    qtbot.waitUntil(enough, timeout=RUN_TIMEOUT_MS)


def cell(dock, entry_id: str, column: int) -> str:
    return dock.model.index(dock.model.row_of(entry_id), column).data()


def test_remote_jobs_run_several_at_once_with_their_host_and_progress(dock, qtbot, tmp_path, factory):
    dock.set_target(CLUSTER)
    assert not dock.target_row.isHidden()  # the line under the buttons says where jobs go
    assert 'run on the Ray cluster at <a href="preferences">ray://head.example:10001</a>' in dock.target_label.text()
    ids = queue_jobs(dock, tmp_path, 3)
    dock.run_all.trigger()
    qtbot.waitUntil(lambda: bool(factory.made), timeout=RUN_TIMEOUT_MS)
    cluster = factory.last
    wait_held(qtbot, cluster, 2)
    qtbot.waitUntil(lambda: cell(dock, ids[1], PROGRESS) == "25 %", timeout=RUN_TIMEOUT_MS)
    # Two at once (the concurrency setting), each with its host and progress; the third waits.
    assert statuses(dock) == [RUNNING, RUNNING, QUEUED]
    assert {cell(dock, i, HOST) for i in ids[:2]} == {"node-1", "node-2"}
    assert cell(dock, ids[0], PROGRESS) == "25 %" and dock.runner.running_ids == ids[:2]
    assert "2 nodes, 8 CPUs, 1 GPU (Ray 2.60.0), 2 jobs at once" in dock.target_label.text()
    dock.select_ids([ids[0]])
    assert "host        node-" in dock.details.toPlainText()
    assert cluster.address == "ray://head.example:10001" and cluster.concurrency == 2
    assert threading.main_thread().name not in cluster.threads  # connecting and jobs: worker threads only

    with qtbot.waitSignal(dock.runner.running_changed, timeout=RUN_TIMEOUT_MS, check_params_cb=lambda r: not r):
        cluster.gate.set()
    assert statuses(dock) == [DONE, DONE, DONE] and cluster.most == 2 and cluster.jobs == 3
    assert cell(dock, ids[2], HOST) == "node-3"
    assert all(os.path.getsize(dock.model.find(i).job.output) > 0 for i in ids)
    assert not cluster.closed  # the connection is kept for the next run


def test_stop_cancels_every_running_remote_job(dock, qtbot, tmp_path, factory):
    dock.set_target(CLUSTER)
    ids = queue_jobs(dock, tmp_path, 3)
    dock.run_all.trigger()
    qtbot.waitUntil(lambda: bool(factory.made), timeout=RUN_TIMEOUT_MS)
    wait_held(qtbot, factory.last, 2)
    assert dock.stop.isEnabled()
    with qtbot.waitSignal(dock.runner.running_changed, timeout=5_000, check_params_cb=lambda r: not r):
        dock.stop.trigger()
    assert statuses(dock) == [CANCELLED, CANCELLED, QUEUED] and not dock.runner.running
    assert not any(os.path.exists(dock.model.find(i).job.output) for i in ids)
    assert dock.run_all.isEnabled() and not dock.stop.isEnabled()


def test_a_connection_that_fails_says_so_and_the_jobs_stay_queued(data_home, qtbot, tmp_path):
    factory = Factory(fail="ray://nowhere:1: no Ray cluster answers at this address")
    dock = QueueDock(cluster_factory=factory)
    qtbot.addWidget(dock)
    try:
        dock.set_target(QueueTarget(remote=True, address="ray://nowhere:1"))
        queue_jobs(dock, tmp_path, 2)
        messages = []
        dock.message.connect(messages.append)
        with qtbot.waitSignal(dock.runner.running_changed, timeout=RUN_TIMEOUT_MS, check_params_cb=lambda r: not r):
            dock.run_all.trigger()
        assert statuses(dock) == [QUEUED, QUEUED] and not dock.runner.running
        want = (
            "Could not connect to the Ray cluster: "
            "ray://nowhere:1: no Ray cluster answers at this address; the jobs stay queued"
        )
        assert messages == [want] and dock.details.toPlainText().startswith(want)
        assert "not connected" in dock.target_label.text() and dock.run_all.isEnabled()
        assert threading.main_thread().name not in factory.last.threads
    finally:
        assert dock.shutdown()


def test_switching_back_to_this_computer_runs_the_next_jobs_here(dock, qtbot, tmp_path, factory):
    dock.set_target(CLUSTER)
    ids = queue_jobs(dock, tmp_path, 3)
    dock.model.remove(ids[1:])
    dock.run_all.trigger()
    qtbot.waitUntil(lambda: bool(factory.made), timeout=RUN_TIMEOUT_MS)
    factory.last.gate.set()
    qtbot.waitUntil(lambda: not dock.runner.running, timeout=RUN_TIMEOUT_MS)
    assert cell(dock, ids[0], HOST) == "node-1"

    dock.set_target(LOCAL)
    qtbot.waitUntil(lambda: factory.last.closed, timeout=5_000)  # the cluster is let go (on a worker thread)
    assert dock.target_row.isHidden()  # this computer: the pane looks as it always did
    files = {"script": str(tmp_path / "model.py"), "calib": str(tmp_path / "calib")}
    (job,) = jobs_from_checkpoints([tmp_path / "ckpt3.pt"], template(files))
    (local_id,) = dock.add_jobs([job])
    with qtbot.waitSignal(dock.runner.running_changed, timeout=RUN_TIMEOUT_MS, check_params_cb=lambda r: not r):
        dock.run_all.trigger()
    assert dock.model.find(local_id).status == DONE and cell(dock, local_id, HOST) == "this computer"
    assert factory.last.jobs == 1 and len(factory.made) == 1  # not sent to the cluster


@pytest.mark.parametrize("fail", [None, "cannot reach head.example:10001: Connection refused"])
def test_switching_to_this_computer_while_connecting_lets_the_connection_go(data_home, qtbot, tmp_path, fail):
    """A connection that arrives after the user chose this computer again is closed, not kept; one
    that fails then neither stops the local run nor reports a cluster error."""
    entered = threading.Event()
    release = threading.Event()

    class Slow(Factory):
        def __call__(self, address, concurrency):
            cluster = super().__call__(address, concurrency)
            plain = cluster.connect

            def connect(timeout_s: float = 15.0):
                entered.set()
                release.wait(5)
                return plain(timeout_s)

            cluster.connect = connect
            return cluster

    slow = Slow(fail=fail)
    panel = QueueDock(cluster_factory=slow)
    qtbot.addWidget(panel)
    try:
        panel.set_target(CLUSTER)
        (entry,) = queue_jobs(panel, tmp_path, 1)
        panel.run_all.trigger()
        assert entered.wait(RUN_TIMEOUT_MS / 1000)
        failures: list[str] = []
        panel.runner.connect_failed.connect(lambda text, _details: failures.append(text))
        panel.set_target(LOCAL)
        (tmp_path / "more").mkdir()
        (more,) = queue_jobs(panel, tmp_path / "more", 1)
        qtbot.waitUntil(lambda: panel.model.find(entry).status == DONE, timeout=RUN_TIMEOUT_MS)  # run here
        release.set()
        if fail is None:
            qtbot.waitUntil(lambda: slow.last.closed, timeout=5_000)
        qtbot.waitUntil(lambda: panel.model.find(more).status == DONE, timeout=RUN_TIMEOUT_MS)
        assert panel.runner.connection is None and slow.last.jobs == 0 and failures == []
    finally:
        release.set()
        assert panel.shutdown()


def test_remote_jobs_running_when_the_app_dies_come_back_queued(dock, qtbot, tmp_path, factory):
    dock.set_target(CLUSTER)
    ids = queue_jobs(dock, tmp_path, 2)
    dock.run_all.trigger()
    qtbot.waitUntil(lambda: bool(factory.made), timeout=RUN_TIMEOUT_MS)
    wait_held(qtbot, factory.last, 2)
    qtbot.waitUntil(lambda: all(cell(dock, i, HOST) for i in ids), timeout=RUN_TIMEOUT_MS)
    # What a restart after a crash reads: the file as it is now, both jobs "running" on their hosts.
    reread = QueueStore(dock.store.path)
    entries, note = reread.load()
    reread.close()
    assert [(e.status, e.message, e.host) for e in entries] == [(QUEUED, INTERRUPTED, "")] * 2
    assert "2 job(s) stopped when mono-quant stopped and are queued again" in note
    # Closing the app during the run: cancelled, saved as queued, no partial output.
    assert dock.shutdown()
    assert [(e.status, e.message, e.host) for e in dock.model.entries()] == [(QUEUED, CLOSED, "")] * 2
    assert not any(os.path.exists(dock.model.find(i).job.output) for i in ids)
    assert factory.last.closed


def test_preferences_choose_the_cluster_and_the_setting_persists(window, qtbot):
    from mono_quant_gui.settings.settings_store import SettingsStore

    dialog = window.show_preferences()
    assert dialog.local.isChecked() and dialog.address.text() == "auto" and dialog.concurrency.text() == "Automatic"
    assert not dialog.address.isEnabled() and not dialog.test.isEnabled() and not dialog.concurrency.isEnabled()
    dialog.cluster.setChecked(True)
    assert dialog.address.isEnabled() and dialog.test.isEnabled() and dialog.concurrency.isEnabled()
    dialog.address.setText("  ray://head.example:10001 ")
    dialog.concurrency.setValue(3)
    dialog.accept()
    want = QueueTarget(remote=True, address="ray://head.example:10001", concurrency=3)
    assert SettingsStore().queue_target() == want and window.queue_panel.runner.target == want
    assert not window.queue_panel.target_row.isHidden()
    assert "ray://head.example:10001" in window.queue_panel.target_label.text()
    assert window.statusBar().currentMessage() == "Queued jobs now run on the Ray cluster at ray://head.example:10001"

    again = window.show_preferences()  # shows what was saved
    assert again.cluster.isChecked() and again.target() == want
    again.local.setChecked(True)
    again.reject()  # Cancel changes nothing
    assert SettingsStore().queue_target() == want
    assert window.commands.preferences in window.commands.file_menu.actions()
    window.queue_panel.target_label.linkActivated.emit("preferences")  # the address in the pane opens it too
    back = window.preferences_dialog
    assert back is not None and back.isVisible() and back.cluster.isChecked()
    back.local.setChecked(True)
    back.accept()
    assert SettingsStore().queue_target() == QueueTarget(False, "ray://head.example:10001", 3)
    assert window.queue_panel.runner.target.cluster_address is None
    assert window.queue_panel.target_row.isHidden()


@pytest.mark.parametrize(
    ("address", "ok", "expected"),
    [
        # A private instance on this computer: ray answers with this computer's size (no instance started).
        ("local", True, f"✓ Connected to local: 1 node, {os.cpu_count()} CPU"),
        # Nothing listens on port 1: refused at once, not after a timeout.
        ("ray://127.0.0.1:1", False, "✗ Could not connect: ray://127.0.0.1:1: cannot reach 127.0.0.1:1:"),
        ("not an address", False, "✗ Could not connect: 'not an address': not a Ray address"),
    ],
)
def test_test_connection_shows_the_cluster_or_the_error(window, qtbot, address, ok, expected):
    import time

    dialog = window.show_preferences()
    dialog.cluster.setChecked(True)
    dialog.address.setText(address)
    started = time.monotonic()
    with qtbot.waitSignal(dialog.checked, timeout=20_000) as answer:
        dialog.test.click()
        assert not dialog.test.isEnabled()  # one test at a time; the window stays responsive meanwhile
    assert answer.args[0] is ok and time.monotonic() - started < 10
    assert dialog.result_text.startswith(expected), dialog.result_text
    assert dialog.test.isEnabled() and dialog.result_label.isVisible()


def test_closing_preferences_during_a_test_does_not_wait_for_it(window, qtbot, monkeypatch):
    """Cancel while Test connection runs: the dialog closes at once (the GUI thread never waits
    for the cluster), and the answer that comes later lands nowhere."""
    import time

    import mono_quant_core.cluster as cluster

    entered, release = threading.Event(), threading.Event()

    def slow_check(address, timeout_s=10.0):
        entered.set()
        release.wait(10)
        raise ClusterError(f"{address}: no answer", address)

    monkeypatch.setattr(cluster, "check_cluster", slow_check)
    dialog = window.show_preferences()
    dialog.cluster.setChecked(True)
    dialog.address.setText("ray://head.example:10001")
    dialog.test.click()
    assert entered.wait(5)
    started = time.monotonic()
    dialog.reject()
    assert time.monotonic() - started < 5.0  # it waited for the test (10 s here) before
    release.set()
    qtbot.waitUntil(lambda: window.preferences_dialog is None, timeout=5_000)
    qtbot.wait(300)  # the late answer is dropped (no error from a deleted dialog)


def test_ray_stays_off_the_start_path(tmp_path):
    """The window with a cluster set in Preferences still starts without importing ray (or torch)."""
    import subprocess
    import sys

    driver = (
        "import sys\n"
        "from PySide6.QtCore import QCoreApplication\n"
        "from PySide6.QtWidgets import QApplication\n"
        "app = QApplication([])\n"
        "QCoreApplication.setOrganizationName('mono-quant-tests')\n"
        "QCoreApplication.setApplicationName('mono-quant-ray-start')\n"
        "from mono_quant_gui.queue.target import QueueTarget\n"
        "from mono_quant_gui.settings.settings_store import SettingsStore\n"
        "SettingsStore().save_queue_target(QueueTarget(True, 'ray://head:10001', 4))\n"
        "from mono_quant_gui.window.main_window import MainWindow\n"
        "w = MainWindow()\n"
        "w.show()\n"
        "app.processEvents()\n"
        "print(w.queue_panel.runner.target.cluster_address, 'ray' in sys.modules, 'torch' in sys.modules)\n"
        "w.close()\n"
    )
    env = dict(
        os.environ, QT_QPA_PLATFORM="offscreen", XDG_CONFIG_HOME=str(tmp_path), XDG_DATA_HOME=str(tmp_path / "data")
    )
    done = subprocess.run([sys.executable, "-c", driver], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["ray://head:10001", "False", "False"]


def test_preferences_refuse_an_address_that_is_not_one_and_keep_the_setting(window, qtbot):
    from mono_quant_gui.settings.settings_store import SettingsStore

    before = SettingsStore().queue_target()
    dialog = window.show_preferences()
    dialog.cluster.setChecked(True)
    dialog.address.setText("head.example")  # no port: not a Ray address
    with qtbot.assertNotEmitted(dialog.checked):  # no connection test ran
        dialog.accept()
    assert dialog.isVisible() and dialog.result() != dialog.DialogCode.Accepted
    assert "'head.example': not a Ray address" in dialog.result_text and dialog.result_text.startswith("✗ ")
    qtbot.waitUntil(lambda: dialog.hint.height() >= dialog.hint.sizeHint().height())  # the answer squeezes nothing
    assert SettingsStore().queue_target() == before and window.queue_panel.runner.target == before
    dialog.address.setText("head.example:6379")  # now one: OK takes it
    dialog.accept()
    assert not dialog.isVisible()
    assert SettingsStore().queue_target() == QueueTarget(remote=True, address="head.example:6379", concurrency=0)


def test_changing_only_the_jobs_at_once_keeps_the_connection(dock, qtbot, tmp_path, factory):
    """A new count of jobs at once for the same address: no reconnect (a local Ray is not restarted)."""
    dock.set_target(CLUSTER)
    (tmp_path / "first").mkdir()
    (tmp_path / "second").mkdir()
    ids = queue_jobs(dock, tmp_path / "first", 2)
    dock.run_all.trigger()
    qtbot.waitUntil(lambda: bool(factory.made), timeout=RUN_TIMEOUT_MS)
    cluster = factory.last
    with qtbot.waitSignal(dock.runner.running_changed, timeout=RUN_TIMEOUT_MS, check_params_cb=lambda r: not r):
        cluster.gate.set()
    assert statuses(dock) == [DONE, DONE]
    cluster.gate.clear()
    dock.set_target(QueueTarget(remote=True, address=CLUSTER.address, concurrency=3))
    assert dock.runner.connection is not None and not cluster.closed and len(factory.made) == 1
    assert "3 jobs at once" in dock.target_label.text()
    more = queue_jobs(dock, tmp_path / "second", 3)
    dock.run_all.trigger()
    wait_held(qtbot, cluster, 3)  # three at once on the same connection
    assert [dock.model.find(i).status for i in more] == [RUNNING] * 3
    with qtbot.waitSignal(dock.runner.running_changed, timeout=RUN_TIMEOUT_MS, check_params_cb=lambda r: not r):
        cluster.gate.set()
    assert cluster.most == 3 and cluster.jobs == 5 and len(factory.made) == 1 and ids
