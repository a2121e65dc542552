"""A checkpoint above open_model's lazy threshold opens in the window without its weights being
read (issue 16): the tree comes from the model built on ``meta``; quantizing then reads each
layer once and gives the in-memory result."""

from __future__ import annotations

import shutil

import torch
from conftest import wait_idle

from mono_quant_core import QuantConfig, module_table, open_model, quantize
from mono_quant_core.loading import model_loader
from mono_quant_core.loading.lazy_model import lazy_weights
from mono_quant_gui.demo import demo

RUN_TIMEOUT = 60_000


def test_a_large_checkpoint_opens_without_reading_its_weights(window, qtbot, tmp_path, monkeypatch):
    example = demo("cnn")
    shutil.copy(example.script, tmp_path / "digits.py")
    shutil.copy(example.script.with_name("heldout.safetensors"), tmp_path / "heldout.safetensors")
    shutil.copy(example.checkpoint, tmp_path / "digits.safetensors")
    monkeypatch.setattr(model_loader, "LAZY_AUTO_BYTES", 0)  # the demo counts as large
    window.open_script(str(tmp_path / "digits.py"), str(tmp_path / "digits.safetensors"))
    wait_idle(qtbot, window)
    loaded = window.session.loaded
    assert loaded is not None and loaded.lazy
    weights = lazy_weights(loaded.model)
    assert weights is not None and weights.bytes_read == 0
    assert all(p.device.type == "meta" for p in loaded.model.parameters())
    tree = window.modules.model
    assert tree.checked_names()  # the module tree is there
    # The sizes in the tree are the float model's, from shapes alone.
    eager = open_model(tmp_path / "digits.py", tmp_path / "digits.safetensors")
    assert [(r.name, r.params, r.bytes) for r in tree.rows] == [
        (r.name, r.params, r.bytes) for r in module_table(eager.model)
    ]
    window.settings_panel.combos["mode"].setCurrentText("weight-only")
    with qtbot.waitSignal(window.runner.finished, timeout=RUN_TIMEOUT):
        window.start_quantize()
    result = window.session.result
    assert result is not None and result.report.load_test_passed
    float_bytes = sum(p.numel() * p.element_size() for p in eager.model.parameters())
    assert weights.bytes_read >= float_bytes  # every layer was read for its build
    expected = quantize(eager.model, QuantConfig(mode="weight-only"), validate=False).model.state_dict()
    got = result.model.state_dict()
    assert list(got) == list(expected) and all(torch.equal(got[k], expected[k]) for k in got)
