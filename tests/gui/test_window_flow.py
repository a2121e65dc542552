"""The whole flow in the window: demo → untick a layer → static int8 → dashboard → save → load_quantized."""

from __future__ import annotations

import torch
from conftest import wait_idle
from PySide6.QtCore import Qt
from PySide6.QtGui import QKeySequence

from mono_quant_core import load_calibration, load_quantized
from mono_quant_core.batches import as_call_args
from mono_quant_gui.demo import demo
from mono_quant_gui.modules import tree_model as tm
from mono_quant_gui.window import dialogs

RUN_TIMEOUT = 60_000


def test_demo_untick_static_int8_save_and_reload(window, qtbot, tmp_path, monkeypatch):
    window.open_demo("cnn")
    wait_idle(qtbot, window)
    assert window.session.loaded is not None
    assert window.calibration_panel.dry_run.text().startswith("✓ Dry run")
    tree = window.modules.model
    ticked = tree.checked_names()
    assert len(ticked) >= 2
    tree.setData(tree.row_of(ticked[0]), Qt.CheckState.Unchecked, Qt.ItemDataRole.CheckStateRole)
    assert tree.check_state("") == Qt.CheckState.PartiallyChecked
    window.settings_panel.combos["mode"].setCurrentText("static")
    assert window.commands.quantize.isEnabled()
    with qtbot.waitSignal(window.runner.finished, timeout=RUN_TIMEOUT):
        window.commands.quantize.trigger()
        assert not window.commands.quantize.isEnabled()  # one run at a time
    result = window.session.result
    report = result.report
    assert (report.dtype, report.mode) == ("int8", "static")
    assert [layer.name for layer in report.layers] == ticked[1:]
    assert any(s.name == ticked[0] and s.reason == "not ticked in the layer list" for s in report.skipped)
    assert window.dashboard.sqnr_plot.bar_count() == len(report.layers)
    assert window.dashboard.calib_card.value.text() == str(report.calibration_samples)
    assert tree.row_of(ticked[1], tm.COL_STATUS).data() in ("quantized", "low SQNR")
    assert window.commands.save_as.isEnabled()

    target = tmp_path / "digits"  # no extension: the chosen filter's is added
    monkeypatch.setattr(dialogs, "ask_save_path", lambda parent, suggested: (str(target), dialogs.SAVE_FILTERS[0]))
    with qtbot.waitSignal(window.runner.finished, timeout=RUN_TIMEOUT):
        window.commands.save_as.trigger()
    saved = tmp_path / "digits.safetensors"
    assert saved.is_file()
    assert str(saved) in window.file_label.text() and "KiB" in window.file_label.text()
    assert window.dashboard.size_plot.sizes[2] == saved.stat().st_size

    reloaded = load_quantized(saved, script=demo("cnn").script)
    samples = load_calibration(demo("cnn").calibration)
    for i in (0, len(samples) - 1):
        args, kwargs = as_call_args(samples[i])
        with torch.inference_mode():
            assert torch.equal(reloaded(*args, **kwargs), result.model(*args, **kwargs))


def test_save_asks_before_overwriting_and_pt_filter_adds_pt(window, qtbot, tmp_path, monkeypatch):
    window.open_demo("cnn")
    wait_idle(qtbot, window)
    with qtbot.waitSignal(window.runner.finished, timeout=RUN_TIMEOUT):
        window.start_quantize()
    existing = tmp_path / "model.pt"
    existing.write_bytes(b"keep me")
    monkeypatch.setattr(
        dialogs, "ask_save_path", lambda parent, suggested: (str(tmp_path / "model"), dialogs.SAVE_FILTERS[1])
    )
    asked = []
    monkeypatch.setattr(dialogs, "confirm_overwrite", lambda parent, path: asked.append(path) or False)
    window.save_as()
    assert asked == [str(existing)] and not window.runner.busy
    assert existing.read_bytes() == b"keep me"
    monkeypatch.setattr(dialogs, "confirm_overwrite", lambda parent, path: True)
    with qtbot.waitSignal(window.runner.finished, timeout=RUN_TIMEOUT):
        window.save_as()
    assert existing.read_bytes()[:7] != b"keep me"
    assert load_quantized(existing, script=demo("cnn").script) is not None


def test_transformer_demo_runs_dynamic(window, qtbot):
    window.open_demo("transformer")
    wait_idle(qtbot, window)
    with qtbot.waitSignal(window.runner.finished, timeout=RUN_TIMEOUT):
        window.start_quantize()
    report = window.session.result.report
    assert report.mode == "dynamic" and report.layers
    assert window.dashboard.sqnr_plot.bar_count() == len(report.layers)
    assert window.calibration_panel.table.item(0, 1).text() == "tokens"  # passed as a keyword


def test_shortcuts():
    expected = {
        "open_script": "Ctrl+O",
        "open_checkpoint": "Ctrl+Shift+O",
        "calibration": "Ctrl+L",
        "quantize": "Ctrl+R",
        "cancel": "Esc",
        "save_as": "Ctrl+S",
    }
    from mono_quant_gui.window.main_window import MainWindow

    window = MainWindow()
    try:
        for name, keys in expected.items():
            assert getattr(window.commands, name).shortcut() == QKeySequence(keys), name
    finally:
        window.close()


def test_clicking_a_bar_selects_the_layer_in_the_tree(window, qtbot):
    window.open_demo("cnn")
    wait_idle(qtbot, window)
    with qtbot.waitSignal(window.runner.finished, timeout=RUN_TIMEOUT):
        window.start_quantize()
    plot = window.dashboard.sqnr_plot
    last = plot.bar_count() - 1
    window.dashboard.layer_clicked.emit(plot.names[last])
    assert window.modules.selected_name() == window.session.result.report.layers[-1].name
