"""The Runs pane: every run of the model stays listed, any run can be shown or saved, two compared."""

from __future__ import annotations

import math

import pytest
from conftest import wait_idle
from PySide6.QtCore import QPointF

from mono_quant_core import QuantReport, read_metadata
from mono_quant_core.report import format_db
from mono_quant_gui.runs import run_text
from mono_quant_gui.runs.compare_view import DELTA_ROLE
from mono_quant_gui.window import dialogs

RUN_TIMEOUT = 60_000


def quantize_with(window, qtbot, dtype: str, mode: str) -> None:
    combos = window.settings_panel.combos
    combos["dtype"].setCurrentText(dtype)
    combos["mode"].setCurrentText(mode)
    assert (combos["dtype"].currentText(), combos["mode"].currentText()) == (dtype, mode)
    with qtbot.waitSignal(window.runner.finished, timeout=RUN_TIMEOUT):
        window.commands.quantize.trigger()
    wait_idle(qtbot, window)


def column(table, name: str) -> int:
    headers = [table.horizontalHeaderItem(c).text() for c in range(table.columnCount())]
    return headers.index(name)


@pytest.fixture
def two_runs(window, qtbot):
    """The cnn demo quantized twice: int8 dynamic, then int4 weight-only."""
    window.open_demo("cnn")
    wait_idle(qtbot, window)
    quantize_with(window, qtbot, "int8", "dynamic")
    quantize_with(window, qtbot, "int4", "weight-only")
    return window


def test_each_run_gets_a_row(two_runs):
    window = two_runs
    runs = window.session.runs
    table = window.runs_panel.table
    assert [r.report.dtype for r in runs] == ["int8", "int4"]
    assert window.runs_panel.pages.currentWidget() is table and table.rowCount() == 2
    for row, run in enumerate(runs):
        assert table.item(row, column(table, "#")).text() == str(row + 1)
        assert table.item(row, column(table, "Output SQNR")).text() == format_db(run.report.output_sqnr_db)
        assert table.item(row, column(table, "File")).text() == ""
    settings = column(table, "Settings")
    assert table.item(0, settings).text().startswith("int8 dynamic · per-channel")
    assert table.item(1, settings).text().startswith("int4 weight-only")
    assert table.item(1, 0).font().bold() and not table.item(0, 0).font().bold()  # the run on the dashboard


def test_compare_two_runs(two_runs, qtbot):
    window = two_runs
    panel = window.runs_panel
    panel.select_rows([0])
    assert not panel.compare_action.isEnabled()
    panel.select_rows([0, 1])
    assert panel.compare_action.isEnabled() and not panel.show_action.isEnabled()
    panel.compare_action.trigger()
    dialog = window.run_list.compare_dialog
    assert dialog is not None and dialog.isVisible() and not dialog.isModal()
    a, b = (run.report for run in window.session.runs)
    config = dialog.config_table
    diff = {
        config.item(r, 0).text(): (config.item(r, 1).text(), config.item(r, 2).text()) for r in range(config.rowCount())
    }
    assert diff["dtype"] == ("int8", "int4")
    assert diff["mode"] == ("dynamic", "weight-only")
    layers = dialog.layer_table
    assert layers.rowCount() == len(a.layers) == len(b.layers)
    for row, (la, lb) in enumerate(zip(a.layers, b.layers, strict=True)):
        assert layers.item(row, 0).text() == la.name == lb.name
        assert layers.item(row, 1).text() == format_db(la.output_sqnr_db, 2)
        delta = layers.item(row, 3).data(DELTA_ROLE)
        assert math.isclose(delta, lb.output_sqnr_db - la.output_sqnr_db)
    assert dialog.plot.bar_count() == len(a.layers)
    assert dialog.plot.describe(0).splitlines()[0] == a.layers[0].name  # what hovering the first bar shows
    bar = dialog.plot.view.mapViewToScene(QPointF(0, dialog.plot.heights[0] / 2))
    assert dialog.plot.slot_at(bar) == 0
    dialog.plot.scene().sigMouseMoved.emit(bar)
    assert dialog.plot.hover.isVisible() and dialog.plot.hover.toPlainText().splitlines()[0] == a.layers[0].name
    assert "output SQNR" in dialog.summary.text() and "size" in dialog.summary.text()


def test_show_and_save_the_first_run(two_runs, qtbot, tmp_path, monkeypatch):
    window = two_runs
    panel = window.runs_panel
    first = window.session.runs[0]
    panel.select_rows([0])
    panel.show_action.trigger()
    assert window.session.result is first and window.session.report is first.report
    assert window.dashboard.sqnr_plot.bar_count() == len(first.report.layers)
    assert panel.table.item(0, 0).font().bold()

    window.session.result = window.session.runs[1]  # Save… saves the selected run, not the one on screen
    target = tmp_path / "first.safetensors"
    asked = []

    def ask(parent, suggested):
        asked.append(suggested)
        return str(target), dialogs.SAVE_FILTERS[0]

    monkeypatch.setattr(dialogs, "ask_save_path", ask)
    panel.select_rows([0])
    with qtbot.waitSignal(window.runner.finished, timeout=RUN_TIMEOUT):
        panel.save_action.trigger()
    wait_idle(qtbot, window)
    assert asked[0].endswith(".int8.safetensors")
    assert read_metadata(target)["config"]["dtype"] == "int8"
    table = panel.table
    assert table.item(0, column(table, "File")).text() == "first.safetensors"
    assert table.item(1, column(table, "File")).text() == ""


def test_opening_another_model_clears_the_list(two_runs, qtbot):
    window = two_runs
    window.runs_panel.select_rows([0, 1])
    window.runs_panel.compare_action.trigger()
    window.open_demo("transformer")
    wait_idle(qtbot, window)
    assert window.session.runs == []
    assert window.runs_panel.table.rowCount() == 0
    assert window.runs_panel.pages.currentWidget() is window.runs_panel.hint
    assert not window.run_list.compare_dialog.isVisible()


def test_the_runs_pane_is_in_the_view_menu_beside_the_log(window):
    assert window.runs_dock in window.docks
    assert window.runs_dock in window.tabifiedDockWidgets(window.log_dock)
    view = next(a.menu() for a in window.menuBar().actions() if a.text() == "&View")
    assert window.runs_dock.toggleViewAction() in view.actions()


def test_how_a_run_and_its_deltas_read():
    config = {
        "dtype": "int8",
        "mode": "static",
        "granularity": "per-tensor",
        "observer": "minmax",
        "layer_overrides": {"a": {"dtype": "float"}, "b": {"dtype": "int4"}},
        "target_metric_drop": 0.01,
    }
    report = QuantReport(config=config, kept_for_accuracy=[{"name": "a", "from": "int8", "to": "float"}])
    assert (
        run_text.settings_summary(report)
        == "int8 static · per-tensor · minmax · 2 overrides · auto · 1 kept for accuracy"
    )
    assert run_text.settings_summary(QuantReport(config={"dtype": "bf16", "mode": "weight-only"})) == "bf16 weight-only"
    assert run_text.metric_text(QuantReport()) == "—"
    report.metrics = {"acc": {"float": 0.9879, "quantized": 0.9859, "delta": -0.002, "higher_is_better": True}}
    assert run_text.metric_text(report) == "acc 0.9859 (−0.0020)"
    assert (run_text.db_delta_text(-1.234), run_text.db_delta_text(math.inf), run_text.db_delta_text(None)) == (
        "−1.23 dB",
        "+∞ dB",
        "—",
    )
    assert run_text.verdict(-3.0) == run_text.WORSE and run_text.verdict(-3, higher_is_better=False) == run_text.BETTER
    assert run_text.verdict(0.0) == run_text.SAME and run_text.verdict(None) is None
