"""How the window shows what the algorithms did: the "Smoothing" phase while SmoothQuant measures, the
algorithm and the weight coverage in the run's summary, the Algorithm column of the tree, and the
live "Selected: N layers · X % of weight bytes" line under the tree."""

from __future__ import annotations

import pytest
from conftest import wait_idle
from PySide6.QtCore import Qt
from torch import nn

from mono_quant_core import module_table
from mono_quant_core.config import describe_algorithm
from mono_quant_core.progress import PhaseEvent
from mono_quant_core.report import LayerReport, QuantReport
from mono_quant_gui.dashboard.dashboard import coverage_figures, coverage_tooltip
from mono_quant_gui.modules import tree_model as tm
from mono_quant_gui.modules.module_panel import ModulePanel
from mono_quant_gui.run.run_status import PHASE_LABELS, RunStatus
from mono_quant_gui.runs import run_text
from mono_quant_gui.window.formatting import format_share

RUN_TIMEOUT = 60_000


def weight_bytes(module: nn.Module) -> int:
    return sum(p.numel() * p.element_size() for p in module.parameters())


def test_every_phase_the_engine_announces_has_a_label(qtbot):
    status = RunStatus()
    qtbot.addWidget(status)
    status.begin()
    status.update_phase(PhaseEvent("smooth", 0, 4, "measuring activation ranges for SmoothQuant on 4 samples"))
    assert status.phase.text() == "Smoothing"
    # The phases of quantize, of the accuracy target's search and of the sensitivity analysis.
    for phase in ("smooth", "calibrate", "quantize", "validate", "metric", "search", "sensitivity"):
        assert phase in PHASE_LABELS
    status.update_phase(PhaseEvent("new_phase", 0, 1, ""))
    assert status.phase.text() == "New phase"  # an unknown phase still reads as words
    status.begin()
    assert status.phase.text() == ""


def test_a_smoothquant_run_shows_smoothing_then_its_algorithm_and_coverage(window, qtbot):
    window.open_demo("transformer")
    wait_idle(qtbot, window)
    before = window.modules.summary.text()  # every quantizable layer ticked
    a = window.settings_panel.algorithms
    assert a.smoothquant.isEnabled(), a.smoothquant.toolTip()
    a.smoothquant.setChecked(True)
    a.smoothquant_alpha.setValue(0.5)
    wait_idle(qtbot, window)
    labels: dict[str, set[str]] = {}

    def seen(task, item):  # connected after the window's own slot: sees what it just showed
        if isinstance(item, PhaseEvent):
            labels.setdefault(item.phase, set()).add(window.run_status.phase.text())

    window.runner.phase.connect(seen)
    with qtbot.waitSignal(window.runner.finished, timeout=RUN_TIMEOUT):
        window.start_quantize()
    wait_idle(qtbot, window, RUN_TIMEOUT)
    assert next(iter(labels)) == "smooth" and labels["smooth"] == {"Smoothing"}
    assert labels["quantize"] == {"Quantizing"}  # (dynamic mode: no calibration phase)

    report = window.session.result.report
    smoothed = [layer.name for layer in report.layers if layer.smoothquant]
    assert smoothed, "SmoothQuant smoothed no layer of the demo transformer"
    # The dashboard's Coverage card: the coverage share and the algorithm with its alpha.
    share = report.coverage["share"]
    assert 0 < share < 1  # the embeddings and LayerNorms stay float
    card = window.dashboard.coverage_card
    assert card.value.text() == format_share(share)
    assert card.detail.text() == "of weights, by round to nearest + SmoothQuant"  # alpha in the tooltip
    tip = card.toolTip()
    assert "Algorithm: round to nearest + SmoothQuant 0.5" in tip and "Stayed float:" in tip
    biggest = max(report.coverage["float"], key=lambda row: row["bytes"])
    assert f"{biggest['name']} ({biggest['type']}" in tip and biggest["reason"] in tip
    # What the tree said before the run is what the run covered (every quantizable layer was ticked).
    assert f"{format_share(share)} of weight bytes" in before
    # The tree's Algorithm column appears and says which layers were smoothed.
    tree = window.modules
    assert not tree.view.isColumnHidden(tm.COL_ALGORITHM)
    for layer in report.layers:
        cell = tree.model.row_of(layer.name, tm.COL_ALGORITHM)
        assert cell.data() == ("rtn+SQ" if layer.name in smoothed else "rtn")
    cell = tree.model.row_of(smoothed[0], tm.COL_ALGORITHM)
    assert "SmoothQuant:" in cell.data(Qt.ItemDataRole.ToolTipRole)
    # The Runs pane names the algorithm in the run's settings.
    assert "SmoothQuant 0.5" in window.runs_panel.table.item(0, 1).text()


@pytest.fixture
def panel(qtbot):
    p = ModulePanel()
    qtbot.addWidget(p)
    p.resize(700, 400)
    p.show()
    return p


def test_the_selection_line_follows_the_ticks(panel):
    model = nn.Sequential(nn.Linear(4, 8), nn.LayerNorm(8), nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 2))
    total = weight_bytes(model)
    first, last = weight_bytes(model[0]), weight_bytes(model[4])
    linears = first + weight_bytes(model[2]) + last
    panel.set_rows(module_table(model))
    tree = panel.model

    def line(n: int, nbytes: int) -> str:
        return f"Selected: {n} of 3 layers · {100 * nbytes / total:.1f} % of weight bytes"

    assert panel.summary.text().startswith(line(3, linears))  # LayerNorm cannot be ticked: under 100 %
    index = tree.row_of("4")
    tree.setData(index, Qt.CheckState.Unchecked.value, Qt.ItemDataRole.CheckStateRole)
    assert panel.summary.text().startswith(line(2, linears - last))
    tree.setData(tree.row_of("2"), Qt.CheckState.Unchecked.value, Qt.ItemDataRole.CheckStateRole)
    assert panel.summary.text().startswith(line(1, first))
    tree.set_checked_names([])
    assert panel.summary.text() == "Selected: 0 of 3 layers · 0 % of weight bytes (0 B)"
    tree.set_checked_names(["0", "2", "4"])
    assert panel.summary.text().startswith(line(3, linears))


def test_a_tied_weight_counts_once():
    emb, head = nn.Embedding(10, 4), nn.Linear(4, 10, bias=False)
    head.weight = emb.weight  # tied, as in language models
    rows = module_table(nn.Sequential(emb, head))
    assert rows[0].weight_bytes == 10 * 4 * 4  # not twice
    assert {r.name: r.weight_bytes for r in rows[1:]} == {"0": 160, "1": 160}


def test_the_tree_names_each_layers_algorithm(qtbot):
    model = tm.ModuleTreeModel()
    model.set_rows(module_table(nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 4), nn.Linear(4, 2))))
    changes = []
    model.algorithms_changed.connect(changes.append)
    model.set_layer_results([LayerReport("0", "Linear", "int8")])
    assert model.row_of("0", tm.COL_ALGORITHM).data() == "rtn" and changes == []  # nothing to show yet
    model.set_layer_results(
        [
            LayerReport("1", "Linear", "int4", algorithm="gptq", bias_corrected=True),
            LayerReport("2", "Linear", "int8", algorithm="hqq", smoothquant="folded into 1"),
        ]
    )
    assert changes == [True]
    assert model.row_of("1", tm.COL_ALGORITHM).data() == "gptq+BC"
    assert model.row_of("2", tm.COL_ALGORITHM).data() == "hqq+SQ"
    tip = model.row_of("2", tm.COL_ALGORITHM).data(Qt.ItemDataRole.ToolTipRole)
    assert tip == "weights rounded by HQQ\nSmoothQuant: folded into 1"
    model.clear_results()
    assert changes == [True, False] and model.row_of("1", tm.COL_ALGORITHM).data() == ""


def coverage_report(**kw) -> QuantReport:
    float_rows = [
        {"name": "embed", "type": "Embedding", "bytes": 4096, "reason": "no replacement"},
        {"name": "norm", "type": "LayerNorm", "bytes": 256, "reason": "no weights to quantize"},
        {"name": "tied", "type": "Linear", "bytes": 0, "reason": "not ticked in the layer list"},
    ]
    coverage = {"quantized_weight_bytes": 95_744, "float_weight_bytes": 4352, "share": 95_744 / 100_096}
    return QuantReport(coverage={**coverage, "float": float_rows}, **kw)


def test_the_run_summary_says_the_algorithm_and_the_coverage():
    gptq = {"algorithm": "gptq", "gptq_act_order": True, "smoothquant_alpha": 0.5}
    report = coverage_report(algorithm=gptq, config={"dtype": "int4", "mode": "weight-only"})
    assert run_text.settings_summary(report) == "int4 weight-only · " + describe_algorithm(gptq)
    assert describe_algorithm(gptq) == "GPTQ (damp 0.01, act order) + SmoothQuant 0.5"
    assert run_text.coverage_text(report) == "95.7 % of weight bytes quantized"
    assert run_text.coverage_details(report).splitlines() == [
        "93.5 KiB of weights quantized, 4.25 KiB kept float",
        "Stayed float:",
        "  embed (Embedding, 4.00 KiB): no replacement",
        "  norm (LayerNorm, 256 B): no weights to quantize",
    ]  # a module whose bytes are counted elsewhere (a tied weight) is not listed
    assert coverage_figures(report) == ("95.7 %", "of weights, by GPTQ + SmoothQuant")
    assert coverage_tooltip(report).splitlines()[:2] == [
        "Algorithm: GPTQ (damp 0.01, act order) + SmoothQuant 0.5",
        "Coverage: 95.7 % of weight bytes quantized",
    ]
    old = QuantReport(config={"dtype": "int8", "mode": "dynamic"})  # an older report: rtn, no coverage
    assert run_text.settings_summary(old) == "int8 dynamic"
    assert run_text.coverage_text(old) is None and run_text.coverage_details(old) == ""
    assert coverage_figures(old) == ("—", "of weights, by round to nearest")


def test_many_float_modules_are_counted_not_all_listed():
    rows = [{"name": f"n{i}", "type": "LayerNorm", "bytes": 100, "reason": "r"} for i in range(20)]
    report = QuantReport(
        coverage={"quantized_weight_bytes": 1, "float_weight_bytes": 2000, "share": 0.5, "float": rows}
    )
    lines = run_text.coverage_details(report).splitlines()
    assert len(lines) == 2 + run_text.MAX_FLOAT_LISTED + 1
    assert lines[-1] == f"  and {20 - run_text.MAX_FLOAT_LISTED} more (800 B)"


@pytest.mark.parametrize(
    ("share", "text"), [(1.0, "100 %"), (0.0, "0 %"), (0.99996, "99.9 %"), (0.00001, "0.1 %"), (0.5, "50.0 %")]
)
def test_a_share_never_reads_as_all_or_nothing_when_it_is_not(share, text):
    assert format_share(share) == text


def test_greyed_algorithm_options_say_why_without_hovering(qtbot):
    from mono_quant_core.config import algorithm_problem
    from mono_quant_gui.settings.settings_panel import SettingsPanel

    panel = SettingsPanel()
    qtbot.addWidget(panel)
    panel.set_calibration_available(True)
    panel.combos["dtype"].setCurrentText("int4")
    panel.combos["mode"].setCurrentText("weight-only")
    reason = algorithm_problem("smoothquant", "int4", "weight-only")
    assert reason is not None and reason.startswith("SmoothQuant")
    assert panel.algorithm_off.text() == f"Off here: {reason}"  # the name said once, not "SmoothQuant SmoothQuant"
    label = panel._labels["smoothquant"]
    assert not label.isEnabled() and label.toolTip() == reason == panel.algorithms.smoothquant.toolTip()
    assert panel._labels["bias_correction"].isEnabled()  # bias correction applies to int4 weight-only
    panel.combos["dtype"].setCurrentText("int8")
    panel.combos["mode"].setCurrentText("static")
    assert panel.algorithm_off.text() == "" and panel.algorithm_off.isHidden()
    assert panel._labels["smoothquant"].isEnabled()
