"""Weight coverage in the report: the share of weight bytes quantized and what stayed float, with reasons."""

from __future__ import annotations

import torch
from torch import nn
from zoo import CNN

from mono_quant_core import QuantConfig, quantize
from mono_quant_core.coverage import share_line, weight_coverage
from mono_quant_core.report import SkippedLayer


def nbytes(*modules: nn.Module) -> int:
    return sum(p.numel() * p.element_size() for m in modules for p in m.parameters())


def test_cnn_coverage_counts_every_parameter_once_and_lists_the_float_ones():
    torch.manual_seed(0)
    model = CNN().eval()
    result = quantize(model, QuantConfig(mode="weight-only"), calibration=[torch.randn(2, 3, 16, 16)])
    coverage = result.report.coverage
    total = nbytes(model)
    norm = model.features[1]
    assert coverage["float_weight_bytes"] == nbytes(norm)  # BatchNorm: weight and bias (running stats are buffers)
    assert coverage["quantized_weight_bytes"] == total - nbytes(norm)
    assert coverage["share"] == (total - nbytes(norm)) / total
    assert coverage["float"] == [
        {"name": "features.1", "type": "BatchNorm2d", "bytes": nbytes(norm), "reason": coverage["float"][0]["reason"]}
    ]
    assert "no quantized replacement (norm layers stay float" in coverage["float"][0]["reason"]


def test_excluded_and_overridden_layers_are_float_with_their_reason():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 8), nn.LayerNorm(8), nn.Linear(8, 8), nn.Linear(8, 4)).eval()
    config = QuantConfig(exclude=["2"], layer_overrides={"3": {"dtype": "float"}})
    coverage = quantize(model, config, calibration=[torch.randn(2, 8)]).report.coverage
    reasons = {row["name"]: row["reason"] for row in coverage["float"]}
    assert reasons["2"] == "excluded by pattern '2'"
    assert reasons["3"] == "kept float by layer_overrides"
    assert "norm layers stay float" in reasons["1"]
    assert coverage["quantized_weight_bytes"] == nbytes(model[0])
    assert [row["name"] for row in coverage["float"]] == ["2", "3", "1"]  # largest first


def test_attention_kept_float_lists_its_out_proj_with_the_parents_reason():
    torch.manual_seed(0)
    model = nn.Sequential(nn.TransformerEncoderLayer(32, 4, 64, dropout=0.0, batch_first=True)).eval()
    result = quantize(model, QuantConfig(exclude=["0.self_attn"]), calibration=[torch.randn(2, 5, 32)])
    rows = {row["name"]: row for row in result.report.coverage["float"]}
    assert rows["0.self_attn"]["reason"] == "excluded by pattern '0.self_attn'"
    assert rows["0.self_attn.out_proj"]["reason"].startswith("part of the parent MultiheadAttention, which stays float")
    attention = nbytes(model[0].self_attn)
    assert rows["0.self_attn"]["bytes"] + rows["0.self_attn.out_proj"]["bytes"] == attention
    with torch.inference_mode():  # the float attention inside a layer with quantized linears runs
        x = torch.randn(2, 5, 32)
        assert result.model(x).shape == x.shape
    # Quantized with the layer, the out_proj is covered by the attention's twin.
    covered = quantize(model, QuantConfig(), calibration=[torch.randn(2, 5, 32)]).report.coverage
    assert all("self_attn" not in row["name"] for row in covered["float"])


def test_tied_parameter_counts_once_and_as_float_while_a_float_module_holds_it():
    embed = nn.Embedding(10, 8)
    head = nn.Linear(8, 10, bias=False)
    head.weight = embed.weight
    model = nn.Sequential(embed, head)
    skipped = [SkippedLayer("0", "Embedding", "excluded by pattern '0'")]
    coverage = weight_coverage(model, skipped, ["1"])
    assert coverage["quantized_weight_bytes"] == 0 and coverage["float_weight_bytes"] == 10 * 8 * 4
    assert coverage["float"] == [{"name": "0", "type": "Embedding", "bytes": 320, "reason": "excluded by pattern '0'"}]
    both = weight_coverage(model, [], ["0", "1"])
    assert both["share"] == 1.0 and both["float"] == []


def test_share_line():
    line = share_line({"share": 0.987, "float": [{"type": "LayerNorm"}, {"type": "LayerNorm"}, {"type": "Embedding"}]})
    assert line == "coverage: 98.7 % of weight bytes quantized (float: 2 LayerNorm, 1 Embedding)"
    assert share_line({}) is None and share_line({"share": None, "float": []}) is None
    assert weight_coverage(nn.ReLU(), [], [])["share"] is None
