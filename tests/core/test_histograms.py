"""layer_histograms: weight counts, the clipping range and grid read from the quantized twin, inputs."""

from __future__ import annotations

import itertools

import pytest
import torch
from torch import nn
from zoo import make

from mono_quant_core import Cancelled, CancelToken, ConfigError, QuantConfig, layer_histograms, quantize


def mlp_samples(n: int = 10) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(3)
    return [torch.randn(8, 64, generator=g) for _ in range(n)]


def quantized(model: nn.Module, samples: list, **config) -> nn.Module:
    return quantize(model, QuantConfig(**config), calibration=samples).model


def test_int8_per_tensor_symmetric_linear_clip_and_grid():
    model, _ = make("mlp")
    samples = mlp_samples()
    q_model = quantized(model, samples, granularity="per-tensor")
    h = layer_histograms(model, q_model, "net.0", bins=64)
    weight = model.net[0].weight.detach()
    assert (h.name, h.type, h.dtype, h.scheme, h.granularity) == ("net.0", "Linear", "int8", "symmetric", "per-tensor")
    assert len(h.weights.counts) == 64 and len(h.weights.edges) == 65
    assert h.weights.total == weight.numel()
    assert h.weights.edges[0] == pytest.approx(float(weight.min()))
    assert h.weights.edges[-1] == pytest.approx(float(weight.max()))
    scale = float(q_model.net[0].weight_scale)
    assert h.weights.clip == pytest.approx((-127 * scale, 127 * scale), rel=1e-12)
    grid = h.weights.grid
    assert grid is not None and len(grid) == 255  # symmetric int8 drops -128
    assert [b - a for a, b in itertools.pairwise(grid)] == pytest.approx([scale] * 254)
    assert (grid[0], grid[-1]) == pytest.approx(h.weights.clip)
    assert h.weights.channel_ranges is None
    assert h.activations is None  # no samples


def test_per_channel_lists_each_channel_range_and_their_union():
    model, _ = make("mlp")
    q_model = quantized(model, mlp_samples(), scheme="asymmetric")
    h = layer_histograms(model, q_model, "net.2")
    q = q_model.net[2]
    scale, zp = q.weight_scale.double(), q.weight_zero_point.double()
    expected = list(zip((scale * (-128 - zp)).tolist(), (scale * (127 - zp)).tolist(), strict=True))
    assert [v for r in h.weights.channel_ranges for v in r] == pytest.approx([v for r in expected for v in r])
    assert len(expected) == model.net[2].out_features
    assert h.weights.clip == (min(lo for lo, _ in expected), max(hi for _, hi in expected))
    assert len(h.weights.grid) == 256
    # Each range holds its channel's dequantized weights.
    w = q.dequantized_weight()
    for c, (lo, hi) in enumerate(expected):
        assert lo - 1e-6 <= float(w[c].min()) and float(w[c].max()) <= hi + 1e-6


@pytest.mark.parametrize(("scheme", "levels"), [("asymmetric", 16), ("symmetric", 15)])
def test_int4_grid_has_one_level_per_code(scheme, levels):
    model, _ = make("mlp")
    q_model = quantized(model, mlp_samples(), dtype="int4", mode="weight-only", granularity="per-group", scheme=scheme)
    h = layer_histograms(model, q_model, "net.0")
    assert h.dtype == "int4" and h.granularity == "per-group"
    assert len(h.weights.grid) == levels
    assert h.weights.total == model.net[0].weight.numel()
    out_features, in_features = model.net[0].weight.shape
    groups = out_features * -(-in_features // 128)  # one scale per group of 128 along each row
    assert len(h.weights.channel_ranges) == groups


def test_static_activations_clip_is_the_calibrated_input_range():
    model, _ = make("mlp")
    samples = mlp_samples()
    q_model = quantized(model, samples, mode="static")
    h = layer_histograms(model, q_model, "net.2", samples, max_samples=4)
    q = q_model.net[2]
    s, zp = float(q.input_scale), float(q.input_zero_point)
    acts = h.activations
    assert acts is not None and h.mode == "static"
    assert acts.clip == pytest.approx((s * (-128 - zp), s * (127 - zp)), rel=1e-12)
    assert len(acts.grid) == 256
    assert acts.total == 4 * 8 * 128  # four batches of 8 rows into a 128-wide Linear
    with torch.inference_mode():  # the input of net.2 is ReLU's output
        first = torch.relu(model.net[0](samples[0]))
    assert acts.edges[0] == pytest.approx(0.0, abs=1e-6)
    assert acts.edges[-1] >= float(first.max()) - 1e-6
    assert all(not m._forward_pre_hooks for m in model.modules())


def test_activations_counted_in_two_passes_when_inputs_are_large(monkeypatch):
    import mono_quant_core.histograms as histograms

    model, _ = make("mlp")
    samples = mlp_samples()
    whole = layer_histograms(model, None, "net.0", samples, bins=32)
    monkeypatch.setattr(histograms, "_KEEP_VALUES", 100)
    twice = layer_histograms(model, None, "net.0", samples, bins=32)
    assert twice.activations == whole.activations
    assert whole.activations.total == 10 * 8 * 64


def test_dynamic_marks_the_widest_batch_range_and_no_grid():
    model, _ = make("mlp")
    samples = mlp_samples()
    h = layer_histograms(model, quantized(model, samples), "net.0", samples)
    acts = h.activations
    lo = min(float(x.min()) for x in samples)
    hi = max(float(x.max()) for x in samples)
    assert acts.clip == pytest.approx((lo, hi)) and acts.grid is None
    assert "per batch" in acts.clip_label


def test_kept_float_layer_has_no_clip():
    model, _ = make("mlp")
    q_model = quantized(model, mlp_samples(), exclude=["net.4"])
    h = layer_histograms(model, q_model, "net.4")
    assert h.dtype == "float" and h.weights.clip is None and h.weights.grid is None
    assert h.weights.total == model.net[4].weight.numel()
    assert "kept float" in h.note


def test_cast_has_no_grid():
    model, _ = make("mlp")
    h = layer_histograms(model, quantized(model, mlp_samples(), dtype="fp16"), "net.0", mlp_samples(2))
    assert h.dtype == "fp16" and h.weights.grid is None and h.weights.clip is None
    assert h.activations is not None and h.activations.clip is None  # casts are weight-only
    assert "no clipping range or grid" in h.note


def test_lstm_histograms_every_weight_matrix():
    model, samples = make("lstm")
    q_model = quantized(model, samples, mode="weight-only")
    h = layer_histograms(model, q_model, "rnn", samples)
    weights = [p for n, p in model.rnn.named_parameters() if n.startswith("weight_")]
    assert h.type == "LSTM" and h.weights.total == sum(w.numel() for w in weights)
    assert len(h.weights.channel_ranges) == sum(w.shape[0] for w in weights)
    assert h.activations is not None and h.activations.clip is None  # weight-only
    embedding = layer_histograms(model, q_model, "embed", samples)
    assert embedding.activations is None and "no floating-point input" in embedding.note


def test_attention_histograms_its_four_projections():
    """An attention's weights are its projections' (in_proj_weight counts as q, k and v); bug:
    'the layer has no weight to histogram'."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.TransformerEncoderLayer(16, 2, 32, batch_first=True, dropout=0.0)).eval()
    samples = [torch.randn(2, 5, 16) for _ in range(4)]
    q_model = quantized(model, samples, mode="static")
    h = layer_histograms(model, q_model, "0.self_attn", samples)
    attention = model[0].self_attn
    assert h.type == "MultiheadAttention" and h.dtype == "int8"
    assert h.weights.total == attention.in_proj_weight.numel() + attention.out_proj.weight.numel()
    assert len(h.weights.channel_ranges) == 3 * 16 + 16  # one per output channel of each projection
    assert h.activations is not None and h.activations.clip is not None  # the query's calibrated range
    reloaded = layer_histograms(q_model, None, "0.self_attn")  # a model from a file: dequantized weights
    assert reloaded.weights.total == h.weights.total


def test_unknown_layer_and_cancel():
    model, _ = make("mlp")
    with pytest.raises(ConfigError, match="no module named 'nope'"):
        layer_histograms(model, None, "nope")
    with pytest.raises(ConfigError, match="no weight"):
        layer_histograms(model, None, "net.1")
    token = CancelToken()
    token.cancel()
    with pytest.raises(Cancelled):
        layer_histograms(model, None, "net.0", mlp_samples(), cancel=token)
    assert all(not m._forward_pre_hooks for m in model.modules())
