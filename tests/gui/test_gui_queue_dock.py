"""The Queue pane: empty-state hint, buttons that follow the selection, import/export, drops, the progress bar.

No job runs here; jobs point at files that need not exist.
"""

from __future__ import annotations

import os

import pytest
from conftest import wait_idle
from PySide6.QtCore import QStandardPaths
from PySide6.QtGui import QColor, QPalette
from PySide6.QtWidgets import QToolButton

from mono_quant_core.config import QuantConfig
from mono_quant_core.jobs import Job
from mono_quant_gui.demo import demo
from mono_quant_gui.queue import CANCELLED, DONE, FAILED, RUNNING, QueueDock, file_dialogs
from mono_quant_gui.queue.dock import HINT_TEXT
from mono_quant_gui.queue.model import PROGRESS


@pytest.fixture
def dock(qapp, tmp_path, monkeypatch, qtbot):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    QStandardPaths.setTestModeEnabled(True)
    panel = QueueDock()
    qtbot.addWidget(panel)
    yield panel
    assert panel.shutdown()
    QStandardPaths.setTestModeEnabled(False)


def job(tmp_path, name: str, **settings) -> Job:
    return Job(
        script=str(tmp_path / "model.py"),
        checkpoint=str(tmp_path / f"{name}.pt"),
        output=str(tmp_path / f"{name}.int8.safetensors"),
        config=QuantConfig(**settings),
    )


def test_empty_state_and_add_current_settings(dock, qtbot, tmp_path):
    assert dock.pages.currentWidget() is dock.hint
    assert (
        dock.hint.text.text()
        == HINT_TEXT
        == ("Add or drop checkpoints to queue one job each with the current settings, or add the current settings")
    )
    assert not dock.run_all.isEnabled() and not dock.stop.isEnabled()
    with qtbot.waitSignal(dock.add_current_requested):
        dock.add_current.trigger()
    (entry_id,) = dock.add_jobs([job(tmp_path, "a")])
    assert dock.pages.currentIndex() == 1 and dock.run_all.isEnabled()
    assert dock.summary.text() == "1 queued"
    dock.remove_ids([entry_id])
    assert dock.pages.currentWidget() is dock.hint


def test_buttons_follow_the_selection(dock, tmp_path):
    ids = dock.add_jobs([job(tmp_path, n) for n in "abcd"])
    for entry_id, status in zip(ids[1:], (FAILED, RUNNING, DONE), strict=True):
        dock.model.set_status(entry_id, status)
    expect = {  # selection -> (export, remove, retry)
        (0,): (True, True, False),
        (1,): (True, True, True),
        (2,): (True, False, False),
        (3,): (True, True, False),
        (2, 3): (True, True, False),
        (): (False, False, False),
    }
    for rows, enabled in expect.items():
        dock.select_ids([ids[r] for r in rows])
        assert (
            dock.export_selected.isEnabled(),
            dock.remove_selected.isEnabled(),
            dock.retry_selected.isEnabled(),
        ) == enabled, rows
    dock.select_ids([ids[1]])
    assert "b.int8: failed" in dock.details.toPlainText()
    dock.select_ids(ids[1:3])
    dock.remove_selected.trigger()  # the running job stays
    assert [e.status for e in dock.model.entries()] == ["queued", RUNNING, DONE]
    assert dock.summary.text() == "1 queued · 1 running · 1 done"


def test_a_progress_update_of_another_job_leaves_the_details_where_the_user_reads_them(dock, qtbot, tmp_path):
    """A failed job's traceback keeps its text, scroll position and selected text while another job
    runs; a change of the selected job itself, or another selection, shows the new details."""
    failed, running = dock.add_jobs([job(tmp_path, "a"), job(tmp_path, "b")])
    traceback = "Traceback (most recent call last):\n" + "\n".join(
        f'  File "model.py", line {i}, in forward' for i in range(300)
    )
    dock.model.set_status(failed, FAILED, "RuntimeError: it broke", traceback)
    dock.model.set_status(running, RUNNING, "starting", progress=0)
    dock.resize(900, 400)
    dock.show()
    qtbot.waitExposed(dock)
    dock.select_ids([failed])
    details = dock.details
    text = details.toPlainText()
    assert text.startswith("a.int8: failed") and "line 299, in forward" in text
    cursor = details.textCursor()
    cursor.setPosition(text.index("line 150"))
    cursor.setPosition(text.index("line 150") + len("line 150"), cursor.MoveMode.KeepAnchor)
    details.setTextCursor(cursor)
    bar = details.verticalScrollBar()
    assert bar.maximum() > 100
    bar.setValue(bar.maximum() - 7)  # the user scrolled to the end of the traceback
    rewrites = []
    details.textChanged.connect(lambda: rewrites.append(details.toPlainText()))

    for percent in (10, 40, 90):
        with qtbot.waitSignal(dock.model.dataChanged):
            dock.model.set_progress(running, percent, f"layer {percent} of 100")
    with qtbot.waitSignal(dock.model.dataChanged):
        dock.model.set_status(running, RUNNING, "still running", progress=95)
    assert rewrites == []
    assert details.toPlainText() == text
    assert bar.value() == bar.maximum() - 7
    assert details.textCursor().selectedText() == "line 150"

    dock.model.reset([failed])  # the selected job's own status changes: its details follow
    assert rewrites and details.toPlainText().startswith("a.int8: queued")
    dock.select_ids([running])
    assert details.toPlainText().startswith("b.int8: running") and "still running" in details.toPlainText()
    dock.select_ids([failed])
    assert details.toPlainText().startswith("a.int8: queued")


def test_export_and_import_job_files(dock, qtbot, tmp_path, monkeypatch):
    out = tmp_path / "exported"
    out.mkdir()
    jobs = [job(tmp_path, "a"), job(tmp_path, "b", dtype="fp16")]
    ids = dock.add_jobs(jobs, ["same", "same"])
    dock.select_ids(ids)
    monkeypatch.setattr(file_dialogs, "ask_export_folder", lambda parent, folder: str(out))
    dock.export_selected.trigger()
    assert sorted(os.listdir(out)) == ["same-2.toml", "same.toml"]
    assert Job.load(out / "same-2.toml") == jobs[1]

    dock.select_ids(ids[:1])
    monkeypatch.setattr(file_dialogs, "ask_export_file", lambda parent, suggested: str(tmp_path / "one.toml"))
    dock.export_selected.trigger()
    assert Job.load(tmp_path / "one.toml") == jobs[0]

    (tmp_path / "broken.toml").write_text("[model]\nscript = 3\n", encoding="utf-8")
    picked = [str(out / "same.toml"), str(tmp_path / "broken.toml"), str(out / "same-2.toml")]
    monkeypatch.setattr(file_dialogs, "ask_job_files", lambda parent, folder: picked)
    with qtbot.waitSignal(dock.message) as blocker:
        dock.import_jobs.trigger()
    assert blocker.args[0] == "Queued 2 job(s); 1 job file(s) could not be read:"
    assert f"{tmp_path / 'broken.toml'}: [model] script: must be a string" in dock.details.toPlainText()
    assert [e.name for e in dock.model.entries()] == ["same", "same", "same", "same-2"]
    assert [e.job for e in dock.model.entries()[2:]] == jobs


def test_dropped_paths_are_reported_not_sorted(dock, qtbot, tmp_path):
    """The pane only reports a drop (the window's one router sorts it, tests/gui/test_window_queue.py)."""
    from gui_helpers import drop_paths

    paths = [str(tmp_path / "x.pt"), str(tmp_path / "a.toml"), str(tmp_path / "notes.txt")]
    with qtbot.waitSignal(dock.paths_dropped) as blocker:
        drop_paths(dock, paths)
    assert blocker.args == [paths]
    assert dock.model.entries() == []  # nothing queued by the pane itself
    template = job(tmp_path, "current", dtype="bf16")
    dock.add_checkpoints([str(tmp_path / "x.pt"), str(tmp_path / "y.safetensors")], template)
    assert [e.name for e in dock.model.entries()] == ["x.bf16", "y.bf16"]


def test_add_checkpoints_asks_for_files_and_reports_them_as_a_drop_does(dock, qtbot, tmp_path, monkeypatch):
    """The Add checkpoints… dialog's choice goes out through ``checkpoints_dropped``, as dropped checkpoints do;
    the dialog opens in the folder of the last files chosen; cancelling it announces nothing."""
    picked = [str(tmp_path / "ckpt" / "a.pt"), str(tmp_path / "ckpt" / "b.safetensors")]
    asked: list[str] = []

    def ask(parent, folder: str) -> list[str]:
        asked.append(folder)
        return picked

    monkeypatch.setattr(file_dialogs, "ask_checkpoints", ask)
    assert dock.add_checkpoints_action.text() == "Add checkpoints…" and dock.add_checkpoints_action.isEnabled()
    assert dock.add_checkpoints_action in [button.defaultAction() for button in dock.hint.findChildren(QToolButton)]
    with qtbot.waitSignal(dock.checkpoints_dropped) as blocker:
        dock.add_checkpoints_action.trigger()
    assert blocker.args == [picked]
    monkeypatch.setattr(file_dialogs, "ask_checkpoints", lambda parent, folder: asked.append(folder) or [])
    with qtbot.assertNotEmitted(dock.checkpoints_dropped):
        dock.add_checkpoints_action.trigger()
    assert asked == [str(tmp_path / "home"), str(tmp_path / "ckpt")]


def test_checkpoints_added_in_the_window_are_queued_with_the_open_model(window, qtbot, tmp_path, monkeypatch):
    window.open_demo("cnn")
    wait_idle(qtbot, window)
    checkpoint = str(demo("cnn").checkpoint)
    monkeypatch.setattr(file_dialogs, "ask_checkpoints", lambda parent, folder: [checkpoint])
    window.queue_panel.add_checkpoints_action.trigger()
    (entry,) = window.queue_panel.model.entries()
    assert entry.job.checkpoint == checkpoint and entry.job.script == str(demo("cnn").script)


def test_a_job_that_cannot_be_queued_is_reported(dock, qtbot, tmp_path):
    bad = Job(script=str(tmp_path / "m\udcff.py"), output=str(tmp_path / "o.safetensors"))
    with qtbot.waitSignal(dock.message) as blocker:
        assert dock.add_jobs([bad]) == []
    assert blocker.args[0].startswith("Not queued: [model] script:")
    assert dock.model.rowCount() == 0


def test_progress_cells_draw_a_bar(dock, tmp_path):
    """Threshold: a full bar paints over half of its cell in the highlight hue; an empty bar and a
    queued job's blank cell paint none (without the delegate, the cell holds only the text "100 %")."""
    ids = dock.add_jobs([job(tmp_path, n) for n in "abc"])
    dock.model.set_status(ids[0], CANCELLED, progress=100)
    dock.model.set_status(ids[1], CANCELLED, progress=0)
    dock.resize(900, 300)
    dock.show()
    table = dock.table
    table.setColumnWidth(PROGRESS, 120)
    image = table.viewport().grab().toImage()
    highlight = table.palette().color(QPalette.ColorRole.Highlight)

    def highlighted(row: int) -> float:
        rect = table.visualRect(dock.model.index(row, PROGRESS)).adjusted(3, 4, -3, -4)
        colors = [
            QColor(image.pixel(x, y))
            for x in range(rect.left(), rect.right())
            for y in range(rect.top(), rect.bottom())
        ]
        return sum(abs(c.hueF() - highlight.hueF()) < 0.05 and c.saturationF() > 0.3 for c in colors) / len(colors)

    assert highlighted(0) > 0.5
    assert highlighted(1) == highlighted(2) == 0.0


def test_an_unusable_data_folder_leaves_a_working_queue(qapp, qtbot, tmp_path, monkeypatch):
    (tmp_path / "home").write_text("a file where the home folder should be")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    QStandardPaths.setTestModeEnabled(True)
    try:
        panel = QueueDock()
        qtbot.addWidget(panel)
        assert panel.store is None
        assert "cannot create the queue's folder" in panel.restore_message
        assert panel.restore_message.endswith("; the queue will not be saved")
        assert len(panel.add_jobs([job(tmp_path, "a")])) == 1
        assert panel.shutdown()
    finally:
        QStandardPaths.setTestModeEnabled(False)
