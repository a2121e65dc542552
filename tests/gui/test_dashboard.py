"""The dashboard: bars per finished layer, ∞ capped and marked, hover text, click → layer, many layers."""

from __future__ import annotations

import math

import pytest
from PySide6.QtCore import QPointF

from mono_quant_core.report import LayerReport, QuantReport
from mono_quant_gui.dashboard.dashboard import Dashboard
from mono_quant_gui.dashboard.sqnr_plot import WINDOW


def layer(name, sqnr, status="ok", out=None):
    return LayerReport(
        name,
        "Linear",
        "int8",
        weight_sqnr_db=sqnr,
        output_sqnr_db=out,
        status=status,
        original_bytes=400,
        quantized_bytes=100,
    )


@pytest.fixture
def dash(qtbot):
    d = Dashboard()
    d.resize(900, 600)
    qtbot.addWidget(d)
    d.show()
    return d


def bar_scene_pos(plot, slot):
    return plot.view.mapViewToScene(QPointF(slot, 1.0))


def test_bars_fill_in_and_infinity_is_capped_with_a_marker(dash):
    dash.begin_run(["a", "b", "c"], original_bytes=1200, static=False, warn_db=20.0)
    plot = dash.sqnr_plot
    assert plot.bar_count() == 0
    dash.add_layers([layer("a", 30.0), layer("b", math.inf)])
    assert plot.bar_count() == 2
    heights = list(plot.bars.opts["height"])
    cap = plot._cap()
    assert heights == [30.0, cap] and cap > 30.0
    xs, ys = plot.infinity.getData()
    assert list(xs) == [1.0] and list(ys) == [cap]
    assert plot.describe(1) == "b\nweight ∞ dB"
    dash.add_layers([layer("c", 12.0, "low-sqnr")])
    assert plot.bar_count() == 3
    assert dash.layers_card.value.text() == "3 / 3"
    assert dash.size_plot.sizes[:2] == [1200, 300]  # each layer saved 300 bytes


def test_finish_shows_the_report(dash):
    dash.begin_run(["a"], 400, static=True, warn_db=20.0)
    report = QuantReport(
        output_sqnr_db=math.inf,
        original_bytes=400,
        quantized_bytes=100,
        compression_ratio=4.0,
        layers=[layer("a", 40.0, out=35.0)],
        calibration_samples=8,
        calibration_method="minmax",
    )
    dash.finish(report)
    assert dash.output_card.value.text() == "∞ dB"
    assert dash.calib_card.value.text() == "8"
    assert "4.00× smaller" in dash.size_card.detail.text()
    assert dash.sqnr_plot.model_label.toPlainText() == "model output ∞ dB"
    assert list(dash.sqnr_plot.outputs.getData()[1]) == [35.0]
    dash.set_file_size(150)
    assert dash.size_plot.sizes == [400, 100, 150]


def test_hover_names_the_layer_and_click_emits_it(dash, qtbot):
    dash.begin_run(["enc.fc1", "enc.fc2"], 800, static=False, warn_db=None)
    dash.add_layers([layer("enc.fc1", 25.0), layer("enc.fc2", 45.5)])
    plot = dash.sqnr_plot
    pos = bar_scene_pos(plot, 1)
    assert plot.slot_at(pos) == 1
    plot._mouse_moved(pos)
    assert plot.hover.isVisible() and plot.hover.toPlainText() == "enc.fc2\nweight 45.5 dB"
    assert plot.slot_at(plot.view.mapViewToScene(QPointF(0.5, 1.0))) is None  # between bars

    class Click:
        def scenePos(self):
            return pos

    with qtbot.waitSignal(plot.layer_clicked) as blocker:
        plot._mouse_clicked(Click())
    assert blocker.args == ["enc.fc2"]


def test_hundreds_of_layers_show_a_window_and_pan(dash):
    names = [f"blocks.{i}.fc" for i in range(600)]
    dash.begin_run(names, 600 * 400, static=False, warn_db=20.0)
    dash.add_layers([layer(n, 30.0 + i % 7) for i, n in enumerate(names)])
    plot = dash.sqnr_plot
    assert plot.bar_count() == 600
    left, right = plot.view.viewRange()[0]
    assert right - left <= WINDOW + 1 and right > 599  # follows the newest layers
    plot.view.setXRange(-0.5, 20, padding=0)  # the rest is reachable by panning
    plot._user_moved()
    dash.add_layers([layer(names[0], 31.0)])
    assert plot.view.viewRange()[0][0] < 1  # no jump back once the user moved the view


def test_empty_state_until_a_run(dash):
    dash.show_hint("Drop a model script here or open the demo", "text")
    assert dash.currentWidget() is dash.hint
    dash.begin_run(["a"], 1, static=False, warn_db=None)
    assert dash.currentWidget() is dash.page


@pytest.mark.parametrize(
    "sqnr,failures,detail,color",
    [
        (34.0, [], "validation passed · 4 held-out files", None),
        (14.5, [], "passed, but under the 20 dB warning line · 4 held-out files", "WARNING"),
        (
            9.0,
            ["output SQNR 9 dB below min_output_sqnr_db 12 dB"],
            "output SQNR 9 dB below min_output_sqnr_db 12 dB · 4 held-out files",
            "ERROR",
        ),
    ],
)
def test_the_output_card_warns_under_the_warning_line(dash, sqnr, failures, detail, color):
    from mono_quant_gui.window import colors

    report = QuantReport(
        dtype="int8",
        mode="static",
        layers=[layer("fc", 30.0)],
        output_sqnr_db=sqnr,
        validation_samples=4,
        calibration_samples=12,
        calibration_method="minmax",
        failures=list(failures),
        passed=not failures,
        config={"warn_layer_sqnr_db": 20.0},
    )
    dash.begin_run(["fc"], 1000, True, 20.0)
    dash.finish(report)
    assert dash.output_card.detail.text() == detail
    style = dash.output_card.value.styleSheet() + dash.output_card.detail.styleSheet()
    if color is None:
        assert colors.WARNING not in style and colors.ERROR not in style
    else:
        assert getattr(colors, color) in style
    assert dash.calib_card.detail.text() == "calibration files · minmax observer"  # files, not "samples"
