"""Analyze Sensitivity in the window: progress to the end, the sorted chart, the tree's column, click, cancel."""

from __future__ import annotations

from conftest import wait_idle

from mono_quant_gui.modules import tree_model as tm

RUN_TIMEOUT = 60_000


def _open_cnn(window, qtbot):
    window.open_demo("cnn")
    wait_idle(qtbot, window)
    assert window.commands.analyze_sensitivity.isEnabled()


def test_analysis_fills_the_chart_and_the_column_and_a_click_selects_the_layer(window, qtbot):
    _open_cnn(window, qtbot)
    ticked = window.modules.model.checked_names()
    seen: list[tuple[int, int]] = []
    window.runner.progress.connect(lambda done, total, _m: seen.append((done, total)))
    with qtbot.waitSignal(window.runner.finished, timeout=RUN_TIMEOUT):
        window.commands.analyze_sensitivity.trigger()
        assert not window.commands.analyze_sensitivity.isEnabled()  # one task at a time
    wait_idle(qtbot, window)
    report = window.session.sensitivity
    assert report is not None
    assert any(total > 0 and done >= total for done, total in seen)
    view = window.sensitivity_view
    assert view.bar_names() == [layer.name for layer in report.layers]
    assert len(view.bar_names()) == len(ticked)
    assert view.currentWidget() is view.page
    for layer in report.layers:
        assert window.modules.model.row_of(layer.name, tm.COL_SENSITIVITY).data()
    assert not window.modules.view.isColumnHidden(tm.COL_SENSITIVITY)
    view.click_bar(1)
    assert window.modules.view.currentIndex().data(tm.NAME_ROLE) == report.layers[1].name
    assert window.commands.analyze_sensitivity.isEnabled()

    window.open_demo("transformer")  # another model: no chart, no column
    wait_idle(qtbot, window)
    assert window.session.sensitivity is None and view.currentWidget() is view.hint
    assert window.modules.view.isColumnHidden(tm.COL_SENSITIVITY)


def test_a_mode_change_clears_the_analysis(window, qtbot):
    _open_cnn(window, qtbot)
    with qtbot.waitSignal(window.runner.finished, timeout=RUN_TIMEOUT):
        window.commands.analyze_sensitivity.trigger()
    wait_idle(qtbot, window)
    assert window.session.sensitivity is not None
    window.settings_panel.combos["mode"].setCurrentText("static")
    assert window.session.sensitivity is None
    assert window.sensitivity_view.currentWidget() is window.sensitivity_view.hint


def test_cancel_in_the_sensitivity_phase_leaves_nothing_half_shown(window, qtbot):
    _open_cnn(window, qtbot)

    def on_phase(task, item):
        if getattr(item, "phase", None) == "sensitivity":
            window.cancel()

    window.runner.phase.connect(on_phase)
    with qtbot.waitSignal(window.runner.cancelled, timeout=RUN_TIMEOUT):
        window.commands.analyze_sensitivity.trigger()
    window.runner.phase.disconnect(on_phase)
    wait_idle(qtbot, window)
    assert window.session.sensitivity is None
    assert window.sensitivity_view.currentWidget() is window.sensitivity_view.hint
    assert window.modules.view.isColumnHidden(tm.COL_SENSITIVITY)
    assert window.commands.analyze_sensitivity.isEnabled() and not window.commands.cancel.isEnabled()
