"""Error paths of a whole session: a full disk on Save As, a corrupt calibration file, a run that fails
its checks.  Each shows an error dialog naming the problem, keeps what was there, and the app goes on."""

from __future__ import annotations

import errno
import shutil

from conftest import wait_idle
from failing_files import FailingFile
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QMessageBox

from mono_quant_core import load_quantized
from mono_quant_core.serialization import atomic
from mono_quant_gui.demo import demo
from mono_quant_gui.modules import tree_model as tm
from mono_quant_gui.window import dialogs

RUN_TIMEOUT = 60_000


def error_box(window) -> QMessageBox:
    box = window.last_error
    assert box.isVisible() and box.icon() == QMessageBox.Icon.Critical
    return box


def quantized_demo(window, qtbot) -> None:
    window.open_demo("cnn")
    wait_idle(qtbot, window)
    with qtbot.waitSignal(window.runner.finished, timeout=RUN_TIMEOUT):
        window.start_quantize()
    assert window.session.result is not None


def test_save_as_to_a_full_disk_keeps_the_earlier_file_and_the_app_saves_elsewhere(
    window, qtbot, tmp_path, monkeypatch
):
    quantized_demo(window, qtbot)
    folder = tmp_path / "out"
    folder.mkdir()
    target = folder / "digits.safetensors"
    target.write_bytes(b"the earlier file")
    monkeypatch.setattr(dialogs, "ask_save_path", lambda parent, suggested: (str(target), dialogs.SAVE_FILTERS[0]))
    monkeypatch.setattr(dialogs, "confirm_overwrite", lambda parent, path: True)
    real_open_temp = atomic.open_temp
    full: list[FailingFile] = []
    monkeypatch.setattr(
        atomic,
        "open_temp",
        lambda fd: (
            full.append(FailingFile(real_open_temp(fd), 4096, OSError(errno.ENOSPC, "No space left on device")))
            or full[-1]
        ),
    )

    with qtbot.waitSignal(window.runner.errored, timeout=RUN_TIMEOUT):
        window.commands.save_as.trigger()
    assert full and full[0].written > 0  # the write had begun when the disk filled up
    box = error_box(window)
    assert box.windowTitle() == "Could not save"
    assert str(target) in box.text() and "disk full" in box.text()
    assert target.read_bytes() == b"the earlier file"
    assert sorted(p.name for p in folder.iterdir()) == ["digits.safetensors"]  # no temporary file left
    assert "Saved" not in window.file_label.text() and window.dashboard.size_plot.sizes[2] is None
    assert window.commands.save_as.isEnabled() and window.commands.quantize.isEnabled()
    box.close()

    monkeypatch.setattr(atomic, "open_temp", real_open_temp)  # space again; save elsewhere
    other = folder / "digits.int8.pt"
    monkeypatch.setattr(dialogs, "ask_save_path", lambda parent, suggested: (str(other), dialogs.SAVE_FILTERS[1]))
    with qtbot.waitSignal(window.runner.finished, timeout=RUN_TIMEOUT):
        window.commands.save_as.trigger()
    assert str(other) in window.file_label.text()
    assert str(other) in window.file_label.text()
    assert sorted(p.name for p in folder.iterdir()) == ["digits.int8.pt", "digits.safetensors"]
    assert target.read_bytes() == b"the earlier file"
    assert load_quantized(other, script=demo("cnn").script) is not None


def corrupt_copy(tmp_path, bad: str = "digits_7.pt"):
    """The CNN demo's calibration folder with one file's bytes replaced by garbage."""
    folder = tmp_path / "calibration"
    shutil.copytree(demo("cnn").calibration, folder)
    assert (folder / bad).is_file()
    (folder / bad).write_bytes(b"\x80\x02 not a tensor file \x00\x01\x02\xff" * 64)
    return folder


def test_a_corrupt_calibration_file_is_caught_before_the_run(window, qtbot, tmp_path):
    """Defect 5 of issue 12: the pane counts the unusable file as such, Quantize says why it is
    off until the user chooses to skip it, and the run then records what it left out."""
    window.open_demo("cnn")
    wait_idle(qtbot, window)
    folder = corrupt_copy(tmp_path)
    window.set_calibration_folder(str(folder))
    wait_idle(qtbot, window)

    panel = window.calibration_panel
    rows = [r for r in range(panel.table.rowCount()) if panel.table.item(r, 0).text() == "digits_7.pt"]
    assert len(rows) == 1
    shown = " ".join(
        panel.table.item(rows[0], c).text() for c in range(panel.table.columnCount()) if panel.table.item(rows[0], c)
    )
    assert "cannot be used" in shown and "truncated" in shown
    summary = panel.summary.text()
    assert "1 cannot be used" in summary and "of" in summary and "usable" in summary
    assert "used ·" not in summary  # never "N of N files used" beside "1 cannot be used"

    window.settings_panel.combos["mode"].setCurrentText("static")
    assert window.settings_panel.combos["mode"].currentText() == "static"
    assert not window.commands.quantize.isEnabled()
    assert window.commands.quantize.toolTip() == panel.problem(True)
    assert "1 calibration file cannot be used" in window.commands.quantize.toolTip()

    panel.skip.setChecked(True)  # the user chooses to leave it out
    assert window.commands.quantize.isEnabled()
    with qtbot.waitSignal(window.runner.finished, timeout=RUN_TIMEOUT):
        window.commands.quantize.trigger()
    report = window.session.result.report
    assert [entry["file"] for entry in report.calibration_skipped] == ["digits_7.pt"]
    assert any("digits_7.pt" in w for w in report.warnings)
    assert report.mode == "static" and report.calibration_samples > 0


def test_a_run_that_fails_its_checks_keeps_its_report_on_the_dashboard_and_in_the_tree(window, qtbot):
    window.open_demo("cnn")
    wait_idle(qtbot, window)
    settings = window.settings_panel
    settings.combos["on_failure"].setCurrentText("error")
    settings.min_sqnr.setValue(200.0)  # far above what int8 reaches
    assert settings.values()["on_failure"] == "error" and settings.values()["min_output_sqnr_db"] == 200.0
    tree = window.modules.model
    ticked = tree.checked_names()

    with qtbot.waitSignal(window.runner.errored, timeout=RUN_TIMEOUT):
        window.commands.quantize.trigger()
    box = error_box(window)
    assert box.windowTitle() == "Quantization failed"
    assert "below min_output_sqnr_db 200 dB" in box.text()
    report = window.session.report
    assert not report.passed and report.layers
    assert window.session.result is None and not window.commands.save_as.isEnabled()

    # The dashboard shows what was measured: one bar per layer, the output SQNR in red with the failure.
    dashboard = window.dashboard
    assert dashboard.currentWidget() is dashboard.page
    assert dashboard.sqnr_plot.bar_count() == len(report.layers)
    assert dashboard.sqnr_plot.names == [layer.name for layer in report.layers]
    assert "below min_output_sqnr_db" in dashboard.output_card.detail.text()
    assert "color: #c0392b" in dashboard.output_card.value.styleSheet()
    assert dashboard.layers_card.value.text() == str(len(report.layers))

    # The tree holds the results and still takes ticks, selections and another run.
    first = report.layers[0]
    assert tree.row_of(first.name, tm.COL_STATUS).data() in ("quantized", "low SQNR")
    assert tree.row_of(first.name, tm.COL_SQNR).data().endswith("dB")
    dashboard.layer_clicked.emit(report.layers[-1].name)
    assert window.modules.selected_name() == report.layers[-1].name
    assert tree.setData(tree.row_of(ticked[0]), Qt.CheckState.Unchecked, Qt.ItemDataRole.CheckStateRole)
    assert tree.checked_names() == ticked[1:]
    box.close()
    settings.min_sqnr.setValue(0.0)  # off
    assert window.commands.quantize.isEnabled()
    with qtbot.waitSignal(window.runner.finished, timeout=RUN_TIMEOUT):
        window.commands.quantize.trigger()
    assert [layer.name for layer in window.session.result.report.layers] == ticked[1:]
    assert window.commands.save_as.isEnabled()
