"""open_quantized: a mono-quant output as a finished run (model, report, config), re-saveable."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from mono_quant_core import QuantConfig, open_quantized, quantize, save_quantized

SCRIPT = """
from torch import nn

def build_model():
    return nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 8))
"""


@pytest.mark.parametrize("suffix", [".safetensors", ".pt"])
def test_an_output_opens_as_the_run_that_wrote_it(tmp_path, suffix):
    (tmp_path / "m.py").write_text(SCRIPT)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 8)).eval()
    calibration = [torch.randn(4, 32) for _ in range(10)]
    result = quantize(model, QuantConfig(mode="static", observer="histogram"), calibration)
    path = tmp_path / f"m.int8{suffix}"
    save_quantized(result, path)

    opened = open_quantized(path, tmp_path / "m.py")
    assert opened.config == result.config
    assert [layer.name for layer in opened.report.layers] == ["0", "2"]
    assert opened.report.output_sqnr_db == result.report.output_sqnr_db
    assert [lay.weight_sqnr_db for lay in opened.report.layers] == [lay.weight_sqnr_db for lay in result.report.layers]
    assert opened.report.file_bytes == path.stat().st_size
    x = torch.randn(3, 32)
    with torch.inference_mode():
        assert torch.equal(opened.model(x), result.model(x))  # runnable, the same numbers
    # Saved again (another name, the other format): the same tensors.
    again = tmp_path / "again.safetensors"
    save_quantized(opened, again)
    reference = tmp_path / "reference.safetensors"
    save_quantized(result, reference)
    got, want = load_file(again), load_file(reference)
    assert got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in want)
