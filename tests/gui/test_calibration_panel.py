"""The calibration pane marks each file usable, unusable (with the reason) or skipped, counts them without
contradicting itself, says why static mode cannot run, offers to skip the unusable files, and shows file
names whole."""

from __future__ import annotations

import pytest
import torch
from PySide6.QtGui import QAction
from PySide6.QtWidgets import QApplication
from torch import nn

import mono_quant_core as mq
from mono_quant_gui.calibration.calibration_panel import FILE, NO_USABLE, NOTE, RANGE, SIZE, TENSOR, CalibrationPanel

#: Qt's item delegate draws a cell's text with a few pixels of margin on each side.
CELL_MARGINS = 6
#: About the width the window gives the pane.
PANE_WIDTH = 480
UNREADABLE = "unreadable: not a file written by torch.save (it is neither a zip archive nor a pickle)"


def name(i: int) -> str:
    return f"calibration_sample_{i:04d}.pt"


@pytest.fixture
def model():
    torch.manual_seed(0)
    return nn.Linear(16, 4).eval()


@pytest.fixture
def folder(tmp_path, model):
    """Four samples, the third unreadable, and a saved output that landed in the folder."""
    for i in (1, 2, 4):
        torch.save(torch.randn(2, 16), tmp_path / name(i))
    (tmp_path / name(3)).write_bytes(b"broken")
    result = mq.quantize(model, mq.QuantConfig(mode="weight-only"), calibration=[torch.randn(2, 16)])
    mq.save_quantized(result, tmp_path / "model.int8.safetensors")
    return tmp_path


def shown(qtbot, folder, model) -> CalibrationPanel:
    panel = CalibrationPanel(QAction("Choose"))
    qtbot.addWidget(panel)
    panel.resize(PANE_WIDTH, 480)
    panel.show()
    qtbot.waitExposed(panel)
    panel.set_folder(str(folder))
    panel.show_preview(mq.preview_calibration(folder, model=model))
    QApplication.processEvents()  # the header sizes its columns to their contents in a posted layout pass
    return panel


def test_each_file_is_marked_and_the_count_never_contradicts_itself(qtbot, folder, model):
    panel = shown(qtbot, folder, model)
    table = panel.table
    files = [table.item(r, FILE).text() for r in range(table.rowCount())]
    assert files == [name(1), name(2), name(3), name(4), "model.int8.safetensors"]
    notes = [table.item(r, NOTE).text() for r in range(table.rowCount())]
    assert notes == ["", "", f"✗ cannot be used: {UNREADABLE}", "", "skipped: a mono-quant output"]
    assert table.item(2, FILE).toolTip() == table.item(2, NOTE).toolTip() == f"✗ cannot be used: {UNREADABLE}"
    assert [table.columnSpan(r, NOTE) for r in range(5)] == [1, 1, RANGE - NOTE + 1, 1, RANGE - NOTE + 1]
    assert table.isColumnHidden(TENSOR)  # lone tensors: no keys to show
    assert [table.item(r, 2).text() for r in (0, 1, 3)] == ["2×16"] * 3
    assert panel.summary.text().splitlines() == [
        "3 of 4 files usable · 1 cannot be used · 1 skipped (a mono-quant output)",
        f"✗ cannot be used: {name(3)}: a run needs them fixed or skipped",
    ]


def test_static_mode_waits_for_the_unusable_files_to_be_fixed_or_skipped(qtbot, folder, model):
    panel = shown(qtbot, folder, model)
    assert not panel.skip.isChecked() and panel.skip.text() == "Skip files that cannot be used"
    assert panel.skip_unusable() is False
    expected = "1 calibration file cannot be used: tick 'Skip files that cannot be used' or fix them"
    assert panel.problem(static=True) == expected
    assert panel.problem(static=False) is None
    with qtbot.waitSignal(panel.skip_changed) as ticked:
        panel.skip.setChecked(True)
    assert ticked.args == [True] and panel.skip_unusable() is True
    assert panel.problem(static=True) is None
    assert panel.summary.text().splitlines()[1] == f"✗ cannot be used: {name(3)}: left out (the report lists them)"
    with qtbot.waitSignal(panel.skip_changed) as cleared:
        panel.skip.setChecked(False)
    assert cleared.args == [False] and panel.problem(static=True) == expected

    (folder / name(4)).write_bytes(b"broken")
    panel.show_preview(mq.preview_calibration(folder, model=model))
    assert panel.problem(static=True) == (
        "2 calibration files cannot be used: tick 'Skip files that cannot be used' or fix them"
    )


def test_a_folder_with_no_usable_file_stops_static_mode_even_when_skipping(qtbot, folder, model):
    for i in (1, 2, 4):
        (folder / name(i)).write_bytes(b"broken")
    panel = shown(qtbot, folder, model)
    panel.skip.setChecked(True)
    counts = "0 of 4 files usable · 4 cannot be used · 1 skipped (a mono-quant output)"
    assert panel.summary.text().splitlines()[0] == counts
    assert panel.problem(static=True) == NO_USABLE == "The calibration folder has no usable files"
    panel.show_error(f"{folder}: no calibration files")
    assert panel.problem(static=True) == NO_USABLE
    panel.set_folder(None)  # no folder: the settings say static mode needs one
    assert panel.problem(static=True) is None


def test_file_names_are_shown_whole_at_the_panes_width(qtbot, folder, model):
    """The reason a file cannot be used spans the short columns; it never squeezes the names to "c…"."""
    panel = shown(qtbot, folder, model)
    table = panel.table
    metrics = table.fontMetrics()
    longest = max(metrics.horizontalAdvance(table.item(r, FILE).text()) for r in range(table.rowCount()))
    assert table.viewport().width() <= PANE_WIDTH
    assert table.columnWidth(FILE) >= longest + CELL_MARGINS
    assert table.columnWidth(FILE) >= table.sizeHintForColumn(FILE)
    # The note spans Tensor … Range without widening them: at this width every column is in view.
    assert table.columnWidth(RANGE) < metrics.horizontalAdvance(UNREADABLE)
    assert table.columnViewportPosition(SIZE) + table.columnWidth(SIZE) <= table.viewport().width()
    # Narrower still, the table scrolls: the names stay whole.
    panel.resize(PANE_WIDTH - 150, 480)
    qtbot.waitUntil(lambda: table.viewport().width() < PANE_WIDTH - 150)
    QApplication.processEvents()
    assert table.columnWidth(FILE) >= longest + CELL_MARGINS
    assert table.horizontalScrollBar().maximum() > 0


def test_the_note_never_widens_the_tensor_column(qtbot, tmp_path):
    """With keywords the Tensor column is shown: the spanned note must not size it to its whole text."""
    for i in (1, 2):
        torch.save({"x": torch.randn(2, 16)}, tmp_path / name(i))
    (tmp_path / name(3)).write_bytes(b"broken")
    panel = shown(qtbot, tmp_path, None)
    table = panel.table
    assert not table.isColumnHidden(TENSOR) and table.item(0, TENSOR).text() == "x"
    assert table.item(2, NOTE).text() == f"✗ cannot be used: {UNREADABLE}"
    assert table.columnWidth(TENSOR) < table.fontMetrics().horizontalAdvance("cannot be used")
    assert table.columnViewportPosition(SIZE) + table.columnWidth(SIZE) <= table.viewport().width()
