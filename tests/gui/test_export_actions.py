"""File → Export: ONNX… and compressed-tensors… on the result on screen, in the background."""

from __future__ import annotations

import json
import sys
import types

import torch
from conftest import wait_idle

from mono_quant_gui.window import export_actions


def quantized_demo(qtbot, window):
    window.open_demo("cnn")
    wait_idle(qtbot, window)
    with qtbot.waitSignal(window.runner.finished, timeout=60_000):
        window.start_quantize()
    wait_idle(qtbot, window)
    window.exporting.update()


def test_export_menu_is_in_the_file_menu_and_waits_for_a_result(window, qtbot):
    titles = [a.text() for a in window.commands.file_menu.actions()]
    assert "&Export" in titles
    assert [a.text() for a in window.exporting.menu.actions()] == ["ONNX…", "compressed-tensors…"]
    assert not window.exporting.compressed.isEnabled() and not window.exporting.onnx.isEnabled()
    quantized_demo(qtbot, window)
    assert window.exporting.compressed.isEnabled() and window.exporting.onnx.isEnabled()


def test_compressed_tensors_export_shows_the_problems_first(window, qtbot, tmp_path, monkeypatch):
    quantized_demo(qtbot, window)
    shown = []
    monkeypatch.setattr(export_actions, "confirm_problems", lambda parent, target, problems: shown.append(problems))
    asked = []
    monkeypatch.setattr(export_actions, "ask_export_folder", lambda parent, s: asked.append(s) or str(tmp_path / "x"))
    window.exporting.export_compressed_tensors()  # the user cancels at the problems
    assert shown and any("exported float" in p and "Conv2d" in p for p in shown[0])
    assert asked == [] and not (tmp_path / "x").exists()
    monkeypatch.setattr(export_actions, "confirm_problems", lambda parent, target, problems: True)
    with qtbot.waitSignal(window.runner.finished, timeout=30_000):
        window.exporting.export_compressed_tensors()
    config = json.loads((tmp_path / "x" / "config.json").read_text())
    (group,) = config["quantization_config"]["config_groups"].values()
    assert group["targets"] == ["Linear"]
    assert "Exported" in window.file_label.text() and "x" in window.file_label.text()


def test_a_failed_export_names_the_folder_and_the_problem(window, qtbot, tmp_path, monkeypatch):
    quantized_demo(qtbot, window)
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep")
    monkeypatch.setattr(export_actions, "confirm_problems", lambda parent, target, problems: True)
    monkeypatch.setattr(export_actions, "ask_export_folder", lambda parent, s: str(mine))
    with qtbot.waitSignal(window.runner.errored, timeout=30_000):
        window.exporting.export_compressed_tensors()
    assert "Could not export mine" in window.last_error.windowTitle()
    assert "not empty" in window.last_error.text() and str(mine) in window.last_error.text()
    assert (mine / "notes.txt").read_text() == "keep"


def test_missing_extra_says_which_to_install(window, qtbot, monkeypatch):
    quantized_demo(qtbot, window)
    monkeypatch.setattr(export_actions, "missing_modules", lambda target: ["onnxruntime"])
    window.exporting.update()
    assert "mono-quant[export]" in window.exporting.onnx.toolTip()
    errors = []
    monkeypatch.setattr(
        export_actions.dialogs, "show_error", lambda parent, title, message, details="": errors.append(message)
    )
    window.exporting.export_onnx()
    assert errors and "onnxruntime" in errors[0] and "mono-quant[export]" in errors[0]


def fake_onnx(monkeypatch, calls):
    """A stand-in ``mono_quant_core.export.onnx_qdq`` recording what the window passes."""

    def export_onnx(result, example, path, opset=None, dynamic_batch=True):
        calls.append((result, example))
        with open(path, "wb") as f:
            f.write(b"onnx")

    package = types.ModuleType("mono_quant_core.export")
    module = types.ModuleType("mono_quant_core.export.onnx_qdq")
    module.export_onnx = export_onnx
    package.onnx_qdq = module
    monkeypatch.setitem(sys.modules, "mono_quant_core.export", package)
    monkeypatch.setitem(sys.modules, "mono_quant_core.export.onnx_qdq", module)
    monkeypatch.setattr(export_actions, "missing_modules", lambda target: [])


def test_onnx_export_uses_the_first_calibration_sample(window, qtbot, tmp_path, monkeypatch):
    quantized_demo(qtbot, window)
    assert window.session.calibration  # the demo opens its calibration folder
    calls = []
    fake_onnx(monkeypatch, calls)
    monkeypatch.setattr(export_actions, "ask_example_file", lambda parent, folder: calls.append("asked") or "")
    monkeypatch.setattr(export_actions, "ask_onnx_path", lambda parent, s: str(tmp_path / "model"))
    with qtbot.waitSignal(window.runner.finished, timeout=30_000):
        window.exporting.export_onnx()
    ((result, example),) = calls
    assert result is window.session.result
    first = export_actions.first_sample(window.session.calibration)
    assert torch.equal(example, first)
    assert (tmp_path / "model.onnx").read_bytes() == b"onnx"


def test_onnx_export_without_calibration_asks_for_an_example(window, qtbot, tmp_path, monkeypatch):
    quantized_demo(qtbot, window)
    window.session.calibration = None
    calls = []
    fake_onnx(monkeypatch, calls)
    example = torch.randn(1, 3, 16, 16)
    torch.save(example, tmp_path / "x0.pt")
    asked = []
    monkeypatch.setattr(export_actions, "ask_example_file", lambda parent, folder: asked.append(folder) or "")
    window.exporting.export_onnx()  # cancelled at the example
    assert asked and calls == []
    monkeypatch.setattr(export_actions, "ask_example_file", lambda parent, folder: str(tmp_path / "x0.pt"))
    monkeypatch.setattr(export_actions, "ask_onnx_path", lambda parent, s: str(tmp_path / "m.onnx"))
    with qtbot.waitSignal(window.runner.finished, timeout=30_000):
        window.exporting.export_onnx()
    assert torch.equal(calls[0][1], example)


def test_onnx_export_of_the_demo_runs_in_onnx_runtime(window, qtbot, tmp_path, monkeypatch):
    """The real exporter behind the menu item: the file passes the checker and ONNX Runtime
    reproduces the quantized demo's output (SQNR >= 35 dB, int8)."""
    import onnx
    import onnxruntime as ort

    from mono_quant_core.tensor import sqnr_db

    quantized_demo(qtbot, window)
    monkeypatch.setattr(export_actions, "ask_onnx_path", lambda parent, s: str(tmp_path / "demo.onnx"))
    with qtbot.waitSignal(window.runner.finished, timeout=60_000):
        window.exporting.export_onnx()
    path = tmp_path / "demo.onnx"
    onnx.checker.check_model(onnx.load(str(path)), full_check=True)
    x = export_actions.first_sample(window.session.calibration)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (got,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    with torch.no_grad():
        expected = window.session.result.model(x)
    assert sqnr_db(expected, torch.from_numpy(got)) >= 35.0
