"""The queue's table model and its file: add, reorder, remove, retry, persistence, corrupt files, locks.

No job runs here (no torch): jobs point at files that need not exist.
"""

from __future__ import annotations

import json
import os

import pytest
from PySide6.QtCore import QModelIndex, QStandardPaths, Qt

from mono_quant_core.config import QuantConfig
from mono_quant_core.errors import ConfigError
from mono_quant_core.jobs import Job
from mono_quant_gui.queue import (
    CANCELLED,
    DONE,
    FAILED,
    QUEUED,
    RUNNING,
    OutputBusy,
    QueueModel,
    QueueStore,
    claimed,
    default_queue_path,
    jobs_from_checkpoints,
    output_claims,
)
from mono_quant_gui.queue.model import MESSAGE, MIME_TYPE, PROGRESS, STATUS, STATUS_ROLE
from mono_quant_gui.queue.store import INTERRUPTED


@pytest.fixture
def stores():
    """Make QueueStores that are closed (their lock released) after the test."""
    made: list[QueueStore] = []

    def make(path=None) -> QueueStore:
        made.append(QueueStore(path))
        return made[-1]

    yield make
    for store in made:
        store.close()


def job(tmp_path, name: str, **settings) -> Job:
    return Job(
        script=str(tmp_path / "model.py"),
        checkpoint=str(tmp_path / f"{name}.pt"),
        output=str(tmp_path / f"{name}.int8.safetensors"),
        config=QuantConfig(**settings),
    )


def names(model: QueueModel) -> list[str]:
    return [e.name for e in model.entries()]


def reopen(stores, path) -> tuple[QueueModel, str | None]:
    """What the next start of the application sees."""
    model = QueueModel()
    return model, model.attach(stores(path))


def test_queue_file_lives_in_the_app_data_folder(data_home, stores):
    path = default_queue_path()
    assert path.startswith(str(data_home)) and os.path.basename(path) == "queue.json"
    assert os.path.dirname(path) == QStandardPaths.writableLocation(QStandardPaths.StandardLocation.AppDataLocation)
    model = QueueModel()
    assert model.attach(stores()) is None and model.rowCount() == 0
    model.add_jobs([job(data_home, "a")])
    assert os.path.isfile(path)


def test_persistence_across_a_restart(data_home, stores):
    store = stores()
    model = QueueModel()
    model.attach(store)
    jobs = [
        job(data_home, "a"),
        job(
            data_home, "b", dtype="int4", mode="weight-only", granularity="per-group", group_size=32, exclude=["head.*"]
        ),
        job(data_home, "c"),
    ]
    ids = model.add_jobs(jobs, ["first", None, "third"])
    assert names(model) == ["first", "b.int8", "third"]
    model.set_status(ids[0], DONE, "done in 0.1 s", progress=100)
    model.set_status(ids[1], FAILED, "no such checkpoint", "Traceback ...")
    model.set_status(ids[2], RUNNING, "calibrating", progress=40)
    store.close()

    second = stores(store.path)
    again = QueueModel()
    message = again.attach(second)
    assert message == "1 job(s) stopped when mono-quant stopped and are queued again"
    restored = again.entries()
    assert [e.id for e in restored] == ids
    assert [e.job for e in restored] == jobs  # every setting survives the TOML round trip
    assert [(e.status, e.message, e.details, e.progress) for e in restored] == [
        (DONE, "done in 0.1 s", "", 100),
        (FAILED, "no such checkpoint", "Traceback ...", 0),
        (QUEUED, INTERRUPTED, "", 0),
    ]  # a job that was running comes back queued
    second.close()
    third, message = reopen(stores, store.path)
    assert message is None and [e.status for e in third.entries()] == [DONE, FAILED, QUEUED]


def test_the_queue_keeps_its_own_copy_of_a_job(data_home, stores):
    model = QueueModel()
    model.attach(stores())
    mine = job(data_home, "a")
    mine.script = "model.py"  # relative: made absolute when queued
    model.add_jobs([mine])
    mine.config.dtype = "int4"
    queued = model.entry(0).job
    assert queued.config.dtype == "int8" and os.path.isabs(queued.script)
    assert mine.script == "model.py"


def test_add_refuses_a_job_the_file_cannot_hold(data_home, stores):
    model = QueueModel()
    model.attach(stores())
    bad = Job(script=str(data_home / "m\udcff.py"), output=str(data_home / "o.safetensors"))
    with pytest.raises(ConfigError, match=r"\[model\] script.*not valid Unicode"):
        model.add_jobs([job(data_home, "a"), bad])
    assert model.rowCount() == 0


def test_reorder_by_move_rows_and_by_drop(data_home, stores):
    store = stores()
    model = QueueModel()
    model.attach(store)
    model.add_jobs([job(data_home, n) for n in "abcde"], list("abcde"))
    assert model.moveRows(QModelIndex(), 0, 1, QModelIndex(), 3)  # a before d
    assert names(model) == list("bcade")
    assert not model.moveRows(QModelIndex(), 1, 1, QModelIndex(), 2)  # onto itself: no move
    assert not model.moveRows(QModelIndex(), 4, 2, QModelIndex(), 0)  # past the end
    # Drag d and b (a discontiguous selection) to the top: they keep their order.
    mime = model.mimeData([model.index(3, 0), model.index(0, 2), model.index(0, 0)])
    assert mime.formats() == [MIME_TYPE]
    assert model.dropMimeData(mime, Qt.DropAction.MoveAction, 0, 0, QModelIndex())
    assert names(model) == list("bdcae")
    # Dropped after the last row (row -1, no parent): to the end.
    assert model.dropMimeData(model.mimeData([model.index(0, 0)]), Qt.DropAction.MoveAction, -1, -1, QModelIndex())
    assert names(model) == list("dcaeb")
    assert not model.flags(model.index(0, 0)) & Qt.ItemFlag.ItemIsDropEnabled
    assert model.flags(QModelIndex()) & Qt.ItemFlag.ItemIsDropEnabled
    store.close()
    again, _ = reopen(stores, store.path)
    assert names(again) == list("dcaeb")


def test_remove_keeps_a_running_job(data_home, stores):
    store = stores()
    model = QueueModel()
    model.attach(store)
    ids = model.add_jobs([job(data_home, n) for n in "abc"], list("abc"))
    model.set_status(ids[1], RUNNING)
    assert sorted(model.remove(ids[:2])) == [ids[0]]
    assert names(model) == ["b", "c"]
    store.close()
    again, _ = reopen(stores, store.path)
    assert names(again) == ["b", "c"]


def test_reset_puts_failed_and_cancelled_jobs_back(data_home, stores):
    model = QueueModel()
    model.attach(stores())
    ids = model.add_jobs([job(data_home, n) for n in "abcd"], list("abcd"))
    for entry_id, status in zip(ids, (FAILED, CANCELLED, DONE, RUNNING), strict=True):
        model.set_status(entry_id, status, f"{status} message", progress=30)
    assert model.reset(ids) == ids[:2]
    assert [(e.status, e.message, e.progress) for e in model.entries()] == [
        (QUEUED, "", 0),
        (QUEUED, "", 0),
        (DONE, "done message", 30),
        (RUNNING, "running message", 30),
    ]
    assert model.next_queued().name == "a"
    assert model.counts() == {QUEUED: 2, DONE: 1, RUNNING: 1}


def test_table_cells(data_home, stores):
    model = QueueModel()
    model.attach(stores())
    (entry_id,) = model.add_jobs([job(data_home, "a")])
    model.set_status(entry_id, FAILED, "a.pt: no such checkpoint\nmore lines", "tb", progress=12)
    row = [model.index(0, c).data() for c in range(model.columnCount())]
    assert row == ["a.int8", "a.pt", "a.int8.safetensors", "", FAILED, "12 %", "a.pt: no such checkpoint"]
    assert model.index(0, MESSAGE).data(Qt.ItemDataRole.ToolTipRole) == "a.pt: no such checkpoint\nmore lines"
    assert model.index(0, 1).data(Qt.ItemDataRole.ToolTipRole) == str(data_home / "a.pt")
    assert model.index(0, STATUS).data(STATUS_ROLE) == FAILED
    model.set_status(entry_id, QUEUED)
    assert model.index(0, PROGRESS).data() == ""


def test_a_corrupt_queue_file_is_moved_aside(data_home, stores):
    path = default_queue_path()
    os.makedirs(os.path.dirname(path))
    with open(path, "wb") as f:
        f.write(b'{"format": "mono-quant-queue", "jobs": [')
    model, message = reopen(stores, None)
    assert model.rowCount() == 0
    aside = [n for n in os.listdir(os.path.dirname(path)) if n.startswith("queue.json.corrupt-")]
    assert len(aside) == 1 and not os.path.exists(path)
    assert f"{path}: not a queue file (not JSON" in message and f"moved aside to {path}.corrupt-" in message
    with open(os.path.join(os.path.dirname(path), aside[0]), "rb") as f:
        assert f.read() == b'{"format": "mono-quant-queue", "jobs": ['
    model.add_jobs([job(data_home, "a")])  # the queue is usable and saves again
    with open(path, encoding="utf-8") as f:
        assert [j["name"] for j in json.load(f)["jobs"]] == ["a.int8"]


@pytest.mark.parametrize(
    "content, problem",
    [
        ([1, 2], "not a queue file (expected"),
        ({"format": "mono-quant-queue", "version": 99, "jobs": []}, "queue format version 99 is not supported"),
    ],
)
def test_foreign_or_newer_files_are_moved_aside(data_home, stores, content, problem):
    path = str(data_home / "queue.json")
    with open(path, "w", encoding="utf-8") as f:
        json.dump(content, f)
    model, message = reopen(stores, path)
    assert model.rowCount() == 0 and problem in message and not os.path.exists(path)


def test_unreadable_jobs_are_left_out_and_the_file_kept(data_home, stores):
    store = stores()
    model = QueueModel()
    model.attach(store)
    model.add_jobs([job(data_home, n) for n in "abc"], list("abc"))
    store.close()
    with open(store.path, encoding="utf-8") as f:
        data = json.load(f)
    data["jobs"][1]["job"] = data["jobs"][1]["job"].replace('dtype = "int8"', 'dtype = "int3"')
    data["jobs"][2]["status"] = "paused"
    with open(store.path, "w", encoding="utf-8") as f:
        json.dump(data, f)
    again, message = reopen(stores, store.path)
    assert names(again) == ["a"]
    assert "2 job(s) could not be read" in message
    assert "job 2 (b): [quantization] dtype: 'int3' is not allowed" in message
    assert "job 3: status 'paused' is not one of" in message
    folder = os.path.dirname(store.path)
    aside = [n for n in os.listdir(folder) if n.startswith("queue.json.corrupt-")]
    assert len(aside) == 1
    with open(os.path.join(folder, aside[0]), encoding="utf-8") as f:
        assert len(json.load(f)["jobs"]) == 3  # nothing is lost
    with open(store.path, encoding="utf-8") as f:
        assert [j["name"] for j in json.load(f)["jobs"]] == ["a"]


def test_a_second_window_does_not_write_the_queue(data_home, stores):
    first = stores()
    model = QueueModel()
    model.attach(first)
    model.add_jobs([job(data_home, "a")])
    second, message = reopen(stores, first.path)
    assert "the queue is open in another mono-quant window" in message
    assert names(second) == ["a.int8"]
    second.add_jobs([job(data_home, "b")])
    with open(first.path, encoding="utf-8") as f:
        assert [j["name"] for j in json.load(f)["jobs"]] == ["a.int8"]


def test_a_failed_save_is_reported(data_home, stores, qtbot):
    path = data_home / "queue.json"
    model = QueueModel()
    model.attach(stores(path))
    (path / "in-the-way").mkdir(parents=True)  # a folder where the file should go: os.replace fails
    with qtbot.waitSignal(model.problem) as blocker:
        model.add_jobs([job(data_home, "a")])
    assert blocker.args[0].startswith(f"{path}: cannot save the queue:")
    assert model.rowCount() == 1  # still in the window
    assert [p.name for p in data_home.iterdir() if p.name.endswith(".tmp")] == []


def test_jobs_from_checkpoints(tmp_path):
    template = Job(
        script=str(tmp_path / "model.py"),
        checkpoint=str(tmp_path / "current.pt"),
        output=str(tmp_path / "current.int8.safetensors"),
        config=QuantConfig(dtype="fp16"),
        report_path=str(tmp_path / "r.json"),
    )
    (tmp_path / "sub").mkdir()
    paths = [
        tmp_path / "resnet-v1.5.pt",
        tmp_path / "sub" / "a.pt",
        tmp_path / "sub" / "a.safetensors",
        tmp_path / "shard.safetensors.index.json",
        tmp_path / "resnet-v1.5.pt",
    ]
    jobs = jobs_from_checkpoints(paths, template)
    assert [(os.path.relpath(j.checkpoint, tmp_path), os.path.relpath(j.output, tmp_path)) for j in jobs] == [
        ("resnet-v1.5.pt", "resnet-v1.5.fp16.safetensors"),
        ("sub/a.pt", "sub/a.pt.fp16.safetensors"),
        ("sub/a.safetensors", "sub/a.safetensors.fp16.safetensors"),
        ("shard.safetensors.index.json", "shard.fp16.safetensors"),
    ]
    assert jobs[0].report_path == str(tmp_path / "resnet-v1.5.fp16.report.json")
    assert all(j.config == template.config and j.config is not template.config for j in jobs)
    assert template.checkpoint == str(tmp_path / "current.pt")
    with pytest.raises(ConfigError, match=r"notes\.txt: not a checkpoint"):
        jobs_from_checkpoints([tmp_path / "notes.txt"], template)
    # An existing output, or one another queued job writes, is never written twice: numbered.
    (tmp_path / "resnet-v1.5.fp16.safetensors").touch()
    again = jobs_from_checkpoints([paths[0], paths[3]], template, taken=[str(tmp_path / "shard.fp16.safetensors")])
    assert [os.path.relpath(j.output, tmp_path) for j in again] == [
        "resnet-v1.5.fp16-2.safetensors",
        "shard.fp16-2.safetensors",
    ]


def test_output_claims(tmp_path):
    out = tmp_path / "o.safetensors"
    link = tmp_path / "link.safetensors"
    out.touch()
    link.symlink_to(out)
    with claimed(out, "Save As"):
        assert output_claims.writer_of(link) == "Save As"
        with pytest.raises(OutputBusy, match=r"link\.safetensors: Save As is writing this file right now"):
            output_claims.claim(link, "the queue job")
    assert output_claims.writer_of(out) is None
