"""The accuracy loop in the window: the task metric on the dashboard, Auto with a target in the Settings pane,
the layers an automatic run kept, and per-layer precision set from the module tree's context menu."""

from __future__ import annotations

from conftest import wait_idle
from PySide6.QtCore import Qt
from PySide6.QtGui import QStandardItemModel

from mono_quant_gui.dashboard.metric_card import NO_METRIC, NO_METRIC_VALUE
from mono_quant_gui.demo import demo
from mono_quant_gui.modules import tree_model as tm
from mono_quant_gui.window import colors, dialogs

RUN_TIMEOUT = 120_000
#: Measured: int4 weight-only per-tensor asymmetric with no metric drop allowed keeps these float.
KEPT = {"features.0", "classifier.4"}


def open_cnn(window, qtbot):
    window.open_demo("cnn")
    wait_idle(qtbot, window)
    assert window.session.loaded is not None


def quantize(window, qtbot):
    with qtbot.waitSignal(window.runner.finished, timeout=RUN_TIMEOUT):
        window.commands.quantize.trigger()
    wait_idle(qtbot, window)


def int4_per_tensor(panel):
    panel.combos["dtype"].setCurrentText("int4")
    panel.combos["scheme"].setCurrentText("asymmetric")
    panel.combos["granularity"].setCurrentText("per-tensor")
    assert panel.combos["mode"].currentText() == "weight-only"


def auto_target(panel, kind: str, value: float):
    target = panel.target
    target.auto.setChecked(True)
    target.kind.setCurrentIndex(target.kind.findData(kind))
    target.value.setValue(value)


def precision_action(window, name: str, text: str):
    """The Precision ▸ ``text`` action of the tree's context menu, right-clicked on layer ``name``."""
    view = window.modules.view
    assert window.modules.select_layer(name)
    index = view.selectionModel().currentIndex()
    menu = window.modules.layer_menu(view.visualRect(index).center())
    assert menu is not None
    sub = next(a.menu() for a in menu.actions() if a.text() == "Precision")
    return next(a for a in sub.actions() if a.text() == text)


def precision_cell(window, name: str):
    return window.modules.model.row_of(name, tm.COL_PRECISION)


def test_a_run_of_the_cnn_demo_shows_its_metric(window, qtbot):
    open_cnn(window, qtbot)
    card = window.dashboard.metric_card
    quantize(window, qtbot)
    entry = window.session.result.report.metrics["evaluate"]
    assert 0.98 <= entry["float"] <= 0.995
    assert f"float {entry['float'] * 100:.1f} %" in card.detail.text()
    assert card.value.text() == f"{entry['quantized'] * 100:.1f} %"
    assert "Δ" in card.detail.text() and "color" not in card.value.styleSheet()  # no target: no verdict
    assert card.title.text() == "METRIC"


def test_auto_with_a_metric_drop_keeps_layers_float_and_says_why(window, qtbot):
    open_cnn(window, qtbot)
    panel = window.settings_panel
    int4_per_tensor(panel)
    auto_target(panel, "drop", 0.0)
    config = window.current_job().config
    assert (config.target_metric_drop, config.target_output_sqnr_db, config.fallback) == (0.0, None, "float")
    phases, messages = [], []

    def seen(task, item):  # connected after the window's own slot: sees what it just showed
        phases.append(getattr(item, "phase", None))
        messages.append(window.statusBar().currentMessage())

    window.runner.phase.connect(seen)
    quantize(window, qtbot)
    assert {"sensitivity", "search", "validate", "metric"} <= set(phases)
    assert "finding the fewest layers to keep" in messages  # the status bar says what each phase does
    report = window.session.result.report
    kept = {entry["name"]: entry for entry in report.kept_for_accuracy}
    assert set(kept) == KEPT and report.accuracy_target["reached"]
    tree = window.modules.model
    for name, entry in kept.items():
        status = tree.row_of(name, tm.COL_STATUS)
        assert status.data() == "kept float"
        assert status.data(Qt.ItemDataRole.ToolTipRole) == entry["reason"]
    card = window.dashboard.metric_card
    assert colors.OK in card.value.styleSheet() and "max drop 0.0 pt" in card.detail.text()
    assert "Target reached with 2 layers kept float" in window.statusBar().currentMessage()


def test_the_precision_menu_writes_an_override_that_the_next_run_uses(window, qtbot):
    open_cnn(window, qtbot)
    int4_per_tensor(window.settings_panel)
    assert precision_cell(window, "features.0").data() == "int4"
    precision_action(window, "features.0", "int8").trigger()
    assert window.session.config.layer_overrides == {"features.0": {"dtype": "int8"}}
    cell = precision_cell(window, "features.0")
    assert cell.data() == "int8" and cell.data(Qt.ItemDataRole.FontRole).bold()
    assert precision_cell(window, "classifier.4").data() == "int4"
    assert window.current_job().config.layer_overrides == {"features.0": {"dtype": "int8"}}
    quantize(window, qtbot)
    report = window.session.result.report
    assert report.layer("features.0").dtype == "int8" and report.layer("classifier.4").dtype == "int4"
    # From Settings removes the entry again.
    precision_action(window, "features.0", "From Settings").trigger()
    assert window.session.config.layer_overrides == {}
    assert precision_cell(window, "features.0").data() == "int4"
    assert not precision_cell(window, "features.0").data(Qt.ItemDataRole.FontRole)


def test_several_layers_take_one_precision_and_a_refused_one_is_said(window, qtbot):
    open_cnn(window, qtbot)
    modules = window.modules
    names = modules.model.quantizable_names()[:2]
    modules.precision_chosen.emit(names, "float")
    assert window.session.config.layer_overrides == {n: {"dtype": "float"} for n in names}
    assert all(precision_cell(window, n).data() == "float" for n in names)
    # An entry that makes the layer static cannot become int4 (int4 is weight-only): the engine says so.
    panel = window.settings_panel
    panel.set_config(window.session.config.replace(layer_overrides={names[0]: {"mode": "static"}}))
    precision_action(window, names[0], "int4").trigger()
    assert window.session.config.layer_overrides == {names[0]: {"mode": "static"}}
    assert "int4 is weight-only" in window.statusBar().currentMessage()


def test_the_target_settings_survive_a_restart(make_window, qtbot):
    first = make_window()
    panel = first.settings_panel
    panel.combos["dtype"].setCurrentText("int4")
    auto_target(panel, "drop", 0.02)
    panel.target.fallback.setCurrentText("int8")
    values = panel.values()
    assert (values["target_metric_drop"], values["target_output_sqnr_db"], values["fallback"]) == (0.02, None, "int8")
    first.close()
    second = make_window()
    assert second.settings_panel.values() == values
    second.settings_panel.target.auto.setChecked(False)
    off = second.settings_panel.config()
    assert (off.target_metric_drop, off.target_output_sqnr_db) == (None, None)


def test_a_script_without_a_metric_runs_and_offers_no_metric_drop(window, qtbot, tmp_path):
    script = tmp_path / "plain.py"
    source = demo("cnn").script.read_text().split("\ndef evaluate", 1)[0]
    script.write_text(source)
    auto_target(window.settings_panel, "drop", 0.01)  # asked for before the script is open
    window.open_script(str(script), str(demo("cnn").checkpoint))
    wait_idle(qtbot, window)
    target = window.settings_panel.target
    model = target.kind.model()
    assert isinstance(model, QStandardItemModel)
    drop = model.item(target.kind.findData("drop"))
    assert not drop.isEnabled() and "plain.py defines no evaluate(model)" in drop.toolTip()
    assert target.current_kind() == "sqnr"  # meanwhile; the drop is what the settings remember
    assert window.settings_panel.persistent_values()["target_metric_drop"] == 0.01
    target.auto.setChecked(False)
    quantize(window, qtbot)
    assert window.session.result.report.metrics == {}
    card = window.dashboard.metric_card
    assert (card.value.text(), card.detail.text()) == (NO_METRIC_VALUE, NO_METRIC)


def test_a_failing_metric_is_a_run_error_naming_script_and_function(window, qtbot, tmp_path, monkeypatch):
    script = tmp_path / "broken.py"
    source = demo("cnn").script.read_text().split("\ndef evaluate", 1)[0]
    script.write_text(source + "\n\ndef evaluate(model):\n    raise RuntimeError('no held-out data')\n")
    shown = []
    monkeypatch.setattr(dialogs, "show_error", lambda parent, title, message, details="": shown.append(message))
    window.open_script(str(script), str(demo("cnn").checkpoint))
    wait_idle(qtbot, window)
    with qtbot.waitSignal(window.runner.errored, timeout=RUN_TIMEOUT):
        window.commands.quantize.trigger()
    wait_idle(qtbot, window)
    assert shown and "broken.py" in shown[0] and "evaluate(model)" in shown[0] and "no held-out data" in shown[0]
    assert window.session.result is None
