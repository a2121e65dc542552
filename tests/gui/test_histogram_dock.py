"""The Histogram pane (a selected layer's weights and inputs, clip lines, grid) and Export Layer Table."""

from __future__ import annotations

import csv
import os

from conftest import wait_idle

from mono_quant_gui.dashboard.histogram_control import NO_RUN
from mono_quant_gui.dashboard.histogram_view import MAX_TICKS
from mono_quant_gui.window import dialogs

RUN_TIMEOUT = 60_000


def open_demo(window, qtbot):
    window.open_demo("cnn")
    wait_idle(qtbot, window)
    window.histogram_dock.raise_()
    qtbot.waitUntil(window.histograms.on_screen)


def quantize_static(window, qtbot):
    window.settings_panel.combos["mode"].setCurrentText("static")
    with qtbot.waitSignal(window.runner.finished, timeout=RUN_TIMEOUT):
        window.commands.quantize.trigger()
    wait_idle(qtbot, window)


def select(window, qtbot, name):
    view = window.histograms.view
    assert window.modules.select_layer(name)
    qtbot.waitUntil(lambda: view.layer == name and not window.runner.busy, timeout=RUN_TIMEOUT)
    return view


def weight_range(q):
    """The union of a symmetric per-channel int8 layer's ranges, from its own scales."""
    scale = q.weight_scale.double()
    return float((-127 * scale).min()), float((127 * scale).max())


def test_selected_layer_shows_weights_inputs_clip_and_grid(window, qtbot):
    open_demo(window, qtbot)
    quantize_static(window, qtbot)
    model, result = window.session.model, window.session.result
    view = select(window, qtbot, "features.0")
    assert view.title.text().startswith("features.0 · Conv2d · int8 symmetric per-channel · static")
    plot = view.weights
    assert plot.counts_total() == model.features[0].weight.numel()
    lines = [line.value() for line in plot.clip_lines]
    assert lines == list(weight_range(result.model.features[0]))
    assert all(line.isVisible() for line in plot.clip_lines)
    assert 0 < plot.tick_count() <= MAX_TICKS + 1
    acts = view.activations
    assert acts.histogram is not None and acts.counts_total() > 0
    q = result.model.features[0]
    s, zp = float(q.input_scale), float(q.input_zero_point)
    assert [line.value() for line in acts.clip_lines] == [s * (-128 - zp), s * (127 - zp)]

    view = select(window, qtbot, "classifier.1")
    assert view.title.text().startswith("classifier.1 · Linear")
    assert view.weights.counts_total() == model.classifier[1].weight.numel()
    assert [line.value() for line in view.weights.clip_lines] == list(weight_range(result.model.classifier[1]))

    # One channel's range instead of the union.
    view.channel.setValue(3)
    lo, hi = view.shown.weights.channel_ranges[3]
    assert [line.value() for line in view.weights.clip_lines] == [lo, hi]

    window.open_demo("cnn")  # a model opened again: nothing of the last one stays
    wait_idle(qtbot, window)
    qtbot.waitUntil(lambda: view.layer is None)
    assert view.stack.currentWidget() is view.hint


def test_before_a_run_weights_alone_and_busy_while_quantizing(window, qtbot):
    open_demo(window, qtbot)
    window.set_calibration_folder(None)
    wait_idle(qtbot, window)
    view = select(window, qtbot, "features.2")
    assert view.weights.counts_total() == window.session.model.features[2].weight.numel()
    assert not any(line.isVisible() for line in view.weights.clip_lines)
    assert NO_RUN in view.note.text()
    assert view.activations.histogram is None and "calibration" in view.activations.empty.toPlainText()

    with qtbot.waitSignal(window.runner.finished, timeout=RUN_TIMEOUT):
        window.commands.quantize.trigger()
        assert window.modules.select_layer("features.5")
        window.histograms.update()  # now, not after the selection settles: the run is surely still going
        assert "busy" in view.note.text()  # never computed on the GUI thread, never behind a run
    qtbot.waitUntil(lambda: view.layer == "features.5" and not window.runner.busy, timeout=RUN_TIMEOUT)
    assert all(line.isVisible() for line in view.weights.clip_lines)
    assert view.shown.mode == "dynamic" and view.activations.histogram is None  # no samples without a folder


def test_hidden_pane_computes_nothing_until_raised(window, qtbot):
    window.open_demo("cnn")
    wait_idle(qtbot, window)
    window.log_dock.raise_()
    qtbot.waitUntil(lambda: not window.histograms.on_screen())
    assert window.modules.select_layer("features.0")
    assert not window.runner.busy and window.histograms.view.layer is None
    window.histogram_dock.raise_()
    qtbot.waitUntil(lambda: window.histograms.view.layer == "features.0" and not window.runner.busy)


def test_export_layer_table(window, qtbot, tmp_path, monkeypatch):
    window.open_demo("cnn")
    wait_idle(qtbot, window)
    assert not window.commands.export_layers.isEnabled()
    quantize_static(window, qtbot)
    assert window.commands.export_layers.isEnabled()
    suggested = []
    target = tmp_path / "digits"  # no extension: .csv is added
    monkeypatch.setattr(dialogs, "ask_csv_path", lambda parent, path: suggested.append(path) or str(target))
    window.commands.export_layers.trigger()
    assert os.path.basename(suggested[0]) == "model.layers.csv"
    written = tmp_path / "digits.csv"
    with written.open(newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    report = window.session.report
    assert [r["name"] for r in rows] == [layer.name for layer in report.layers]
    first, layer = rows[0], report.layers[0]
    assert (first["type"], first["dtype"], first["status"]) == (layer.type, layer.dtype, layer.status)
    assert float(first["weight_sqnr_db"]) == layer.weight_sqnr_db
    assert first["shape"] == "x".join(str(d) for d in layer.shape)
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []

    window.open_demo("cnn")  # another model: no report on screen, nothing to export
    wait_idle(qtbot, window)
    assert not window.commands.export_layers.isEnabled()
