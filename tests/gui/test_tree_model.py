"""The module tree: check states propagate both ways, bulk select/clear, results, and at 5,000+ modules
work proportional to the visible rows (its speed is measured by bench/bench_gui.py)."""

from __future__ import annotations

import pytest
from PySide6.QtCore import QPoint, Qt
from torch import nn

from mono_quant_core import module_table
from mono_quant_core.report import LayerReport, SkippedLayer
from mono_quant_core.selection import ModuleRow
from mono_quant_gui.modules import tree_model as tm
from mono_quant_gui.modules.module_panel import ModulePanel


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(4, 8)
        self.act = nn.ReLU()
        self.fc2 = nn.Linear(8, 4)
        self.norm = nn.LayerNorm(4)


class Net(nn.Module):
    def __init__(self, blocks=2):
        super().__init__()
        self.blocks = nn.Sequential(*[Block() for _ in range(blocks)])
        self.head = nn.Linear(4, 2)


def big_table(blocks: int) -> list[ModuleRow]:
    """module_table(Net(blocks)) without building thousands of modules (that alone takes seconds)."""
    small = module_table(Net(blocks=1))
    by_name = {r.name: r for r in small}
    block, head, root, seq = by_name["blocks.0"], by_name["head"], by_name[""], by_name["blocks"]
    seq = ModuleRow(
        "blocks", "", seq.type, blocks * block.params, blocks * block.bytes, False, None, False,
        blocks * block.weight_bytes,
    )  # fmt: skip
    root = ModuleRow(
        "", None, root.type, seq.params + head.params, seq.bytes + head.bytes, False, None, False,
        seq.weight_bytes + head.weight_bytes,
    )  # fmt: skip
    rows = [root, seq]
    for b in range(blocks):
        for r in small:
            if r.name.startswith("blocks.0"):
                name = f"blocks.{b}" + r.name[len("blocks.0") :]
                parent = r.parent if r.parent == "blocks" else f"blocks.{b}"
                rows.append(
                    ModuleRow(
                        name, parent, r.type, r.params, r.bytes, r.quantizable, r.reason, r.is_leaf, r.weight_bytes
                    )
                )
    rows.append(by_name["head"])
    return rows


def test_big_table_matches_the_real_module_table():
    assert big_table(3) == module_table(Net(blocks=3))


@pytest.fixture
def model(qapp):
    m = tm.ModuleTreeModel()
    m.set_rows(module_table(Net()))
    return m


def state(m, name):
    return m.check_state(name)


def test_all_quantizable_layers_start_ticked_and_containers_reflect_them(model):
    assert model.checked_names() == ["blocks.0.fc1", "blocks.0.fc2", "blocks.1.fc1", "blocks.1.fc2", "head"]
    assert state(model, "") == Qt.CheckState.Checked
    assert state(model, "blocks.0.norm") is None  # LayerNorm: no checkbox
    assert state(model, "blocks.0.act") is None


def test_unticking_a_leaf_makes_its_ancestors_partial(model):
    index = model.row_of("blocks.0.fc1")
    assert model.setData(index, Qt.CheckState.Unchecked.value, Qt.ItemDataRole.CheckStateRole)
    assert state(model, "blocks.0.fc1") == Qt.CheckState.Unchecked
    assert state(model, "blocks.0") == Qt.CheckState.PartiallyChecked
    assert state(model, "blocks") == Qt.CheckState.PartiallyChecked
    assert state(model, "") == Qt.CheckState.PartiallyChecked
    assert state(model, "blocks.1") == Qt.CheckState.Checked
    assert "blocks.0.fc1" not in model.checked_names()


def test_ticking_a_container_ticks_its_subtree_and_settles_the_parent(model):
    model.setData(model.row_of("blocks"), Qt.CheckState.Unchecked, Qt.ItemDataRole.CheckStateRole)
    assert model.checked_names() == ["head"]
    assert state(model, "blocks.1") == Qt.CheckState.Unchecked
    assert state(model, "") == Qt.CheckState.PartiallyChecked
    # A partially checked container becomes checked when clicked (the view sends Checked).
    model.setData(model.row_of("blocks.0.fc2"), Qt.CheckState.Checked, Qt.ItemDataRole.CheckStateRole)
    assert state(model, "blocks") == Qt.CheckState.PartiallyChecked
    model.setData(model.row_of("blocks"), Qt.CheckState.Checked, Qt.ItemDataRole.CheckStateRole)
    assert state(model, "") == Qt.CheckState.Checked
    assert len(model.checked_names()) == 5


def test_check_changes_emit_data_changed_for_each_affected_parent(model, qtbot):
    seen = []
    model.dataChanged.connect(lambda a, b, roles: seen.append((a.data(tm.NAME_ROLE), b.data(tm.NAME_ROLE))))
    with qtbot.waitSignal(model.checks_changed):
        model.setData(model.row_of("blocks.1.fc2"), Qt.CheckState.Unchecked, Qt.ItemDataRole.CheckStateRole)
    assert sorted(seen) == sorted(
        [("blocks.1.fc2", "blocks.1.fc2"), ("blocks.1", "blocks.1"), ("blocks", "blocks"), ("", "")]
    )


def test_select_and_clear_by_type_and_pattern(model):
    assert model.set_checked_where(False, pattern="blocks.*.fc2") == 2
    assert model.checked_names() == ["blocks.0.fc1", "blocks.1.fc1", "head"]
    assert model.set_checked_where(False, type_name="Linear", pattern="blocks.1") == 2  # a container's children
    assert model.checked_names() == ["blocks.0.fc1", "head"]
    assert model.set_checked_where(True, pattern="re:blocks\\.\\d\\.fc2") == 2
    assert model.checked_names() == ["blocks.0.fc1", "blocks.0.fc2", "blocks.1.fc2", "head"]
    assert model.set_checked_where(True, type_name="Conv2d") == 0


def test_unsupported_layers_are_grey_with_the_reason_as_tooltip(model):
    norm = model.row_of("blocks.0.norm")
    assert norm.data(Qt.ItemDataRole.ForegroundRole) is not None
    assert "LayerNorm has no quantized replacement" in norm.data(Qt.ItemDataRole.ToolTipRole)
    assert model.row_of("head").data(Qt.ItemDataRole.ForegroundRole) is None
    assert not (model.flags(norm) & Qt.ItemFlag.ItemIsUserCheckable)


def test_columns_show_counts_sizes_and_run_results(model):
    head = model.row_of("head")
    assert [model.index(head.row(), c, head.parent()).data() for c in range(4)] == ["head", "Linear", "10", "40 B"]
    model.set_layer_results([LayerReport("head", "Linear", "int8", weight_sqnr_db=float("inf"))])
    model.set_skipped([SkippedLayer("blocks.0.norm", "LayerNorm", "no replacement")])
    assert model.row_of("head", tm.COL_SQNR).data() == "∞ dB"
    assert model.row_of("head", tm.COL_STATUS).data() == "quantized"
    assert model.row_of("blocks.0.norm", tm.COL_STATUS).data() == "float"
    assert model.row_of("blocks.0.norm", tm.COL_STATUS).data(Qt.ItemDataRole.ToolTipRole) == "no replacement"
    model.clear_results()
    assert model.row_of("head", tm.COL_SQNR).data() == ""


def test_sorting_by_size_orders_siblings_by_bytes(qtbot):
    panel = ModulePanel()
    qtbot.addWidget(panel)
    panel.set_rows(module_table(Block()))
    panel.view.sortByColumn(tm.COL_BYTES, Qt.SortOrder.DescendingOrder)
    root = panel.proxy.index(0, 0)
    names = [panel.proxy.index(r, 0, root).data(tm.NAME_ROLE) for r in range(panel.proxy.rowCount(root))]
    assert names == ["fc1", "fc2", "norm", "act"]  # 160, 144, 32, 0 bytes


def test_bar_selects_and_clears_in_one_action_and_reports_bad_regex(qtbot):
    panel = ModulePanel()
    qtbot.addWidget(panel)
    panel.set_rows(module_table(Net()))
    panel.bar.type_combo.setCurrentIndex(panel.bar.type_combo.findData("Linear"))
    assert panel.bar.type_combo.currentText() == "Linear (5)"
    panel.bar.pattern.setText("blocks.0")
    qtbot.mouseClick(panel.bar.clear_button, Qt.MouseButton.LeftButton)
    assert panel.model.checked_names() == ["blocks.1.fc1", "blocks.1.fc2", "head"]
    assert panel.summary.text().startswith("Selected: 3 of 5 layers · ")
    panel.bar.pattern.setText("re:(")
    qtbot.mouseClick(panel.bar.select_button, Qt.MouseButton.LeftButton)
    assert "re:(" in panel.summary.text()


def test_select_layer_reveals_it(qtbot):
    panel = ModulePanel()
    qtbot.addWidget(panel)
    panel.set_rows(module_table(Net()))
    assert panel.select_layer("blocks.1.fc2")
    assert panel.selected_name() == "blocks.1.fc2"
    assert not panel.select_layer("nope")


class ReadCounter:
    """Counts ``ModuleTreeModel.data`` calls and the modules (rows) they read, and keeps the values returned."""

    def __init__(self, monkeypatch):
        self.calls = 0
        self.rows: set[int] = set()
        self.values: dict[tuple[int, int, int], object] = {}
        original = tm.ModuleTreeModel.data

        def data(model, index, role=Qt.ItemDataRole.DisplayRole):
            value = original(model, index, role)
            self.calls += 1
            self.rows.add(index.internalId())
            self.values[(index.internalId(), index.column(), int(role))] = value
            return value

        monkeypatch.setattr(tm.ModuleTreeModel, "data", data)

    def reset(self) -> None:
        self.calls, self.rows, self.values = 0, set(), {}


def visible_modules(panel) -> set[int]:
    """The modules (source row ids) of the rows the tree view shows in its viewport now."""
    view = panel.view
    height = view.viewport().height()
    shown, index = set(), view.indexAt(QPoint(1, 1))
    while index.isValid() and view.visualRect(index).top() < height:
        shown.add(panel.proxy.mapToSource(index).internalId())
        index = view.indexBelow(index)
    return shown


def test_a_tree_of_six_thousand_modules_reads_only_the_visible_rows_and_updates_with_one_signal(
    qtbot, qapp, monkeypatch
):
    """Work scales with what is on screen, not with the model: showing the tree, expanding a container
    of 1,250 children, unticking everything and showing 2,501 results read only the rows in the viewport,
    and a bulk change is announced by O(1) signals, not one per module or per parent.
    (The time these take is measured by bench/bench_gui.py.)"""
    rows = big_table(1250)  # 1 + 1 + 1250 * 5 + 1 = 6253 modules
    assert len(rows) > 5000
    reads = ReadCounter(monkeypatch)
    panel = ModulePanel()
    qtbot.addWidget(panel)
    panel.show()
    qapp.processEvents()
    cells_per_row = len(tm.COLUMNS)
    # Per painted cell the delegate asks for ~8 roles; a couple of paints per step are allowed for.
    reads_per_cell = 30

    reads.reset()
    panel.set_rows(rows)
    panel.view.viewport().repaint()
    shown = visible_modules(panel)
    assert len(shown) == 3  # "", blocks (collapsed) and head
    assert reads.rows == shown, "set_rows read modules that are not on screen"
    assert 0 < reads.calls <= len(shown) * cells_per_row * reads_per_cell
    assert len(panel.model.checked_names()) == 2501

    # Expanding "blocks" puts 1,250 rows under it; only the few in the viewport are read.
    for name in ("blocks", "blocks.0"):
        panel.view.expand(panel.proxy.mapFromSource(panel.model.row_of(name)))
    qapp.processEvents()
    shown = visible_modules(panel)
    assert 5 < len(shown) < 100
    reads.reset()
    panel.view.viewport().repaint()
    assert reads.rows == shown
    assert reads.calls <= len(shown) * cells_per_row * reads_per_cell

    signals: list[str] = []
    model = panel.model
    model.dataChanged.connect(lambda *args: signals.append("dataChanged"))
    model.layoutChanged.connect(lambda *args: signals.append("layoutChanged"))
    model.modelReset.connect(lambda *args: signals.append("modelReset"))
    model.checks_changed.connect(lambda: signals.append("checks_changed"))
    depth = 4  # "", blocks, blocks.i, blocks.i.fc1

    def repainted(check) -> bool:
        return shown <= reads.rows and check()

    # Untick everything: 2,501 layers and 1,253 containers change state.
    qapp.processEvents()
    reads.reset()
    model.setData(model.row_of(""), Qt.CheckState.Unchecked, Qt.ItemDataRole.CheckStateRole)
    assert model.checked_names() == []
    assert model.check_state("blocks.7") == Qt.CheckState.Unchecked
    assert signals.count("checks_changed") == 1
    changes = [s for s in signals if s != "checks_changed"]
    assert 1 <= len(changes) <= depth, f"{len(changes)} change signals for one untick-all"
    check = Qt.ItemDataRole.CheckStateRole.value
    boxes = {model.row_of(n).internalId() for n in ("", "blocks", "blocks.0", "blocks.0.fc1", "blocks.1")}
    assert boxes <= shown
    # The signal makes the view repaint what it shows (and only that), with the new states.
    qtbot.waitUntil(lambda: repainted(lambda: all((i, 0, check) in reads.values for i in boxes)))
    assert reads.rows <= shown
    assert {reads.values[(i, 0, check)] for i in boxes} == {Qt.CheckState.Unchecked}

    # Every layer's result at once.
    signals.clear()
    qapp.processEvents()
    reads.reset()
    model.set_layer_results([LayerReport(n, "Linear", "int8", weight_sqnr_db=40.0) for n in model.quantizable_names()])
    assert model.row_of("blocks.1249.fc2", tm.COL_SQNR).data() == "40.0 dB"
    reads.reset()
    changes = [s for s in signals if s != "checks_changed"]
    assert 1 <= len(changes) <= depth, f"{len(changes)} change signals for 2,501 results"
    display = Qt.ItemDataRole.DisplayRole.value
    fc1 = model.row_of("blocks.0.fc1").internalId()
    qtbot.waitUntil(lambda: repainted(lambda: (fc1, tm.COL_SQNR, display) in reads.values))
    assert reads.rows <= shown
    assert reads.values[(fc1, tm.COL_SQNR, display)] == "40.0 dB"


def test_precision_sensitivity_and_kept_columns(model, qtbot):
    from mono_quant_core import LayerSensitivity

    model.set_precisions({"head": "int4", "blocks.0.fc1": "int8", "blocks.0.norm": "int8"}, overridden={"head"})
    assert model.row_of("head", tm.COL_PRECISION).data() == "int4"
    assert model.row_of("head", tm.COL_PRECISION).data(Qt.ItemDataRole.FontRole).bold()
    assert model.row_of("blocks.0.fc1", tm.COL_PRECISION).data(Qt.ItemDataRole.FontRole) is None
    assert "set for this layer" in model.row_of("head", tm.COL_PRECISION).data(Qt.ItemDataRole.ToolTipRole)
    assert model.row_of("blocks.0.norm", tm.COL_PRECISION).data() == ""  # not quantizable: no precision
    with qtbot.waitSignal(model.dataChanged):
        model.set_sensitivity([LayerSensitivity("head", "Linear", "int8", output_sqnr_db=12.34, rank=1)])
    cell = model.row_of("head", tm.COL_SENSITIVITY)
    assert cell.data() == "12.3 dB" and cell.data(tm.SORT_ROLE) == 12.34
    assert cell.data(Qt.ItemDataRole.ToolTipRole).startswith("rank 1: output SQNR 12.3 dB")
    assert model.row_of("blocks.0.fc1", tm.COL_SENSITIVITY).data() == ""
    model.set_kept([{"name": "head", "from": "int4", "to": "float", "reason": "rank 1 of 5"}])
    model.set_kept([{"name": "head", "from": "int4", "to": "int8", "reason": "rank 1 of 5"}])
    assert model.row_of("head", tm.COL_STATUS).data() == "widened to int8"
    assert model.row_of("head", tm.COL_STATUS).data(Qt.ItemDataRole.ToolTipRole) == "rank 1 of 5"
    model.clear_results()
    assert model.row_of("head", tm.COL_STATUS).data() == ""


def test_the_sensitivity_column_shows_once_there_are_values(qtbot):
    from mono_quant_core import LayerSensitivity

    panel = ModulePanel()
    qtbot.addWidget(panel)
    panel.set_rows(module_table(Net()))
    assert panel.view.isColumnHidden(tm.COL_SENSITIVITY) and panel.view.isColumnHidden(tm.COL_PARAMS)
    panel.set_sensitivity([LayerSensitivity("head", "Linear", "int8", output_sqnr_db=12.0, rank=1)])
    assert not panel.view.isColumnHidden(tm.COL_SENSITIVITY)
    panel.show_column(tm.COL_PARAMS)
    assert not panel.view.isColumnHidden(tm.COL_PARAMS)
    panel.set_sensitivity([])
    assert panel.view.isColumnHidden(tm.COL_SENSITIVITY)
