"""Column widths: the module tree's Name column fits the names on screen and Type its type names in the rest,
the queue's file columns fit their names next to a stretching Message, and the calibration table keeps
Range and Size in view in a pane as narrow as the window's."""

from __future__ import annotations

from PySide6.QtWidgets import QHeaderView
from torch import nn

import mono_quant_core as mq
from mono_quant_core.config import QuantConfig
from mono_quant_core.jobs import Job
from mono_quant_gui.modules import module_panel as mp
from mono_quant_gui.modules import tree_model as tm
from mono_quant_gui.queue import STATUSES
from mono_quant_gui.queue import model as qm
from mono_quant_gui.queue.model import QueueModel
from mono_quant_gui.queue.table import MAX_FITTED_WIDTH, QueueTable

#: Qt's item delegate draws a cell's text with a few pixels of margin on each side.
CELL_MARGINS = 6


def transformer_rows():
    model = nn.TransformerEncoder(
        nn.TransformerEncoderLayer(16, 2, 32, batch_first=True), 2, enable_nested_tensor=False
    )
    return mq.module_table(model)


def tree_panel(qtbot, width: int) -> mp.ModulePanel:
    panel = mp.ModulePanel()
    qtbot.addWidget(panel)
    panel.resize(width, 400)
    panel.show()
    qtbot.waitExposed(panel)
    panel.set_rows(transformer_rows())
    qtbot.waitUntil(lambda: panel.view.viewport().width() > width - 40)
    return panel


def test_the_type_column_fits_the_type_names_when_there_is_room(qtbot):
    panel = tree_panel(qtbot, 800)
    view, header = panel.view, panel.view.header()
    types = {r.type for r in panel.model.rows}
    assert "NonDynamicallyQuantizableLinear" in types and "TransformerEncoderLayer" in types
    longest = max(view.fontMetrics().horizontalAdvance(t) for t in types)
    assert view.columnWidth(tm.COL_TYPE) >= longest + CELL_MARGINS
    assert header.sectionResizeMode(tm.COL_NAME) == QHeaderView.ResizeMode.Stretch
    assert all(header.sectionResizeMode(c) == QHeaderView.ResizeMode.Interactive for c in range(1, len(tm.COLUMNS)))
    # Numbers and statuses fit their usual widest texts.
    for col, texts in mp._WIDEST.items():
        if view.isColumnHidden(col):
            continue
        assert view.columnWidth(col) >= max(view.fontMetrics().horizontalAdvance(t) for t in texts) + CELL_MARGINS
    # All six columns are in view: nothing to scroll sideways.
    assert sum(view.columnWidth(c) for c in range(len(tm.COLUMNS))) <= view.viewport().width()


def test_in_a_narrow_pane_name_takes_what_type_can_give(qtbot):
    panel = tree_panel(qtbot, 460)
    view = panel.view
    qtbot.waitUntil(lambda: not panel._fit_timer.isActive())
    room = view.viewport().width() - sum(view.columnWidth(c) for c in mp._WIDEST if not view.isColumnHidden(c))
    longest = max(view.fontMetrics().horizontalAdvance(r.type) for r in panel.model.rows)
    names = view.sizeHintForColumn(tm.COL_NAME)  # the names on screen, indented, with their check boxes
    assert view.columnWidth(tm.COL_NAME) < names  # too narrow for both: Name takes all it may
    floor = max(panel._text_width(tm.COL_TYPE, ("Sequential",)), int(room * (1 - mp._NAME_MAX_SHARE)))
    assert view.columnWidth(tm.COL_TYPE) == floor < longest  # Type keeps its least, cut in the middle
    assert view.columnWidth(tm.COL_NAME) + view.columnWidth(tm.COL_TYPE) == room  # nothing to scroll sideways
    # Wider, the names fit and Type has the rest.
    panel.resize(560, 400)
    qtbot.waitUntil(lambda: view.columnWidth(tm.COL_TYPE) > floor)
    assert view.columnWidth(tm.COL_NAME) >= view.sizeHintForColumn(tm.COL_NAME)
    assert view.columnWidth(tm.COL_TYPE) < longest
    # A cut type name keeps its end: "TransformerEncoderLayer" stays apart from "TransformerEncoder".
    assert isinstance(view.itemDelegateForColumn(tm.COL_TYPE), mp.MiddleElideDelegate)


def test_the_queue_fits_its_file_names_and_lets_the_message_take_the_rest(qtbot, tmp_path):
    model = QueueModel()
    table = QueueTable(model)
    qtbot.addWidget(table)
    table.resize(1000, 200)
    table.show()
    qtbot.waitExposed(table)
    metrics = table.fontMetrics()
    header = table.horizontalHeader()

    def add(name: str) -> None:
        model.add_jobs(
            [
                Job(
                    script=str(tmp_path / "model.py"),
                    checkpoint=str(tmp_path / f"{name}.safetensors"),
                    output=str(tmp_path / f"{name}.int8.safetensors"),
                    config=QuantConfig(),
                )
            ]
        )

    def fitted(column: int, text: str) -> bool:
        return table.columnWidth(column) >= min(metrics.horizontalAdvance(text) + CELL_MARGINS, MAX_FITTED_WIDTH)

    add("resnet50-epoch-90")  # a job added while the table is on screen
    qtbot.waitUntil(lambda: fitted(qm.CHECKPOINT, "resnet50-epoch-90.safetensors"))
    assert fitted(qm.OUTPUT, "resnet50-epoch-90.int8.safetensors") and fitted(qm.NAME, "resnet50-epoch-90.int8")
    assert table.columnWidth(qm.STATUS) >= max(metrics.horizontalAdvance(s) for s in STATUSES) + CELL_MARGINS
    assert header.sectionResizeMode(qm.MESSAGE) == QHeaderView.ResizeMode.Stretch
    message_width = table.columnWidth(qm.MESSAGE)
    assert message_width > 200
    assert header.sectionViewportPosition(qm.MESSAGE) + message_width == table.viewport().width()

    add("a-checkpoint-with-a-name-far-longer-than-any-column-should-grow-to-show-in-full" * 2)
    qtbot.waitUntil(lambda: table.columnWidth(qm.OUTPUT) == MAX_FITTED_WIDTH)
    assert table.columnWidth(qm.CHECKPOINT) == MAX_FITTED_WIDTH  # cut (its tooltip has it), not the table
