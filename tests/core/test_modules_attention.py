"""QuantizedMultiheadAttention and torch's transformer layers after quantization.

Thresholds (output SQNR of the twin against the float attention, worst output):
int8 dynamic / static >= 30 dB, int8 weight-only >= 38 dB, int4 per-group
weight-only >= 18 dB, fp16 >= 60 dB, bf16 >= 40 dB; the attention weights
(need_weights) meet the same floors.  A float twin path (to_float) is exact to
the dequantized weights.
"""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn
from torch.nn.modules.linear import NonDynamicallyQuantizableLinear

from mono_quant_core import QuantConfig, load_quantized, quantize, save_quantized
from mono_quant_core.modules import (
    QuantizedLinear,
    QuantizedMultiheadAttention,
    QuantizedNonDynamicallyQuantizableLinear,
    disable_fused_fast_paths,
    replacement_for,
)
from mono_quant_core.outputs import flat_tensors
from mono_quant_core.selection import module_table
from mono_quant_core.tensor import sqnr_db

E, HEADS, L, S, N = 32, 4, 7, 9, 3

CONFIGS = {
    "int8-dynamic": (QuantConfig(mode="dynamic"), 30.0),
    "int8-weight-only": (QuantConfig(mode="weight-only"), 38.0),
    "int8-per-tensor": (QuantConfig(mode="weight-only", granularity="per-tensor"), 30.0),
    "int4-group": (QuantConfig(dtype="int4", mode="weight-only", granularity="per-group", group_size=16), 18.0),
    "fp16": (QuantConfig(dtype="fp16"), 60.0),
    "bf16": (QuantConfig(dtype="bf16"), 40.0),
}

OPTIONS = {
    "plain": {},
    "batch-first": {"batch_first": True},
    "no-bias": {"bias": False},
    "kdim-vdim": {"kdim": 24, "vdim": 20},
    "bias-kv-zero-attn": {"add_bias_kv": True, "add_zero_attn": True},
}


def inputs(mha: nn.MultiheadAttention, seed: int = 1, self_attention: bool = False):
    g = torch.Generator().manual_seed(seed)

    def shaped(length: int, dim: int) -> torch.Tensor:
        return torch.randn((N, length, dim) if mha.batch_first else (length, N, dim), generator=g)

    query = shaped(L, E)
    if self_attention:
        return query, query, query
    return query, shaped(S, mha.kdim), shaped(S, mha.vdim)


def worst(reference, approx) -> float:
    pairs = list(zip(flat_tensors(reference), flat_tensors(approx), strict=True))
    assert pairs
    return min(sqnr_db(a, b) for a, b in pairs)


def make(**options) -> nn.MultiheadAttention:
    torch.manual_seed(0)
    mha = nn.MultiheadAttention(E, HEADS, **options)
    with torch.no_grad():  # biases are zero at init: give them values to carry
        for p in (mha.in_proj_bias, mha.out_proj.bias):
            if p is not None:
                p.normal_(0, 0.1)
    return mha.eval()


@pytest.mark.parametrize("option", OPTIONS)
@pytest.mark.parametrize("config_name", CONFIGS)
def test_output_sqnr_per_configuration_and_option(config_name, option):
    config, floor = CONFIGS[config_name]
    mha = make(**OPTIONS[option])
    q = QuantizedMultiheadAttention.from_float(mha, config).eval()
    args = inputs(mha)
    with torch.inference_mode():
        db = worst(mha(*args), q(*args))
        db_self = worst(mha(*args[:1] * 3), q(*args[:1] * 3)) if mha._qkv_same_embed_dim else db
    assert min(db, db_self) >= floor, f"{config_name} {option}: {db:.1f} / {db_self:.1f} dB"
    assert q.kernel != "pending"


def test_projections_are_quantized_linears_sharing_the_float_biases():
    mha = make()
    q = QuantizedMultiheadAttention.from_float(mha, QuantConfig(mode="dynamic"))
    assert [type(m) for _, m in q.projections()] == [QuantizedLinear] * 4
    state = q.state_dict()
    assert state["q_proj.weight"].dtype == torch.int8 and state["q_proj.weight_scale"].shape == (E,)
    assert state["out_proj.weight"].shape == (E, E)
    assert q.in_proj_bias is not None and torch.equal(q.in_proj_bias, mha.in_proj_bias)
    assert q.k_proj.bias.data_ptr() == mha.in_proj_bias[E:].data_ptr()  # no copy of the float bias
    meta = q.quant_meta()
    assert meta["type"] == "MultiheadAttention" and meta["shape"] == [3 * E, E]
    assert meta["weights"]["v_proj.weight"] == [E, E]
    assert q.weight_range_problems() == []
    assert sorted(q.weight_error_sums) == ["k_proj.weight", "out_proj.weight", "q_proj.weight", "v_proj.weight"]


@pytest.mark.parametrize("mask", ["bool-attn", "float-attn", "3d-attn", "key-padding", "causal", "both"])
@pytest.mark.parametrize("need_weights", [True, False])
def test_masks_and_attention_weights(mask, need_weights):
    mha = make(batch_first=True)
    q = QuantizedMultiheadAttention.from_float(mha, QuantConfig(mode="weight-only"))
    query, key, value = inputs(mha)
    g = torch.Generator().manual_seed(3)
    causal = nn.Transformer.generate_square_subsequent_mask(L)[:, :L]
    kwargs: dict = {"need_weights": need_weights}
    if mask == "bool-attn":
        kwargs["attn_mask"] = torch.rand(L, S, generator=g) > 0.7
    elif mask == "float-attn":
        kwargs["attn_mask"] = torch.randn(L, S, generator=g)
    elif mask == "3d-attn":
        kwargs["attn_mask"] = torch.randn(N * HEADS, L, S, generator=g)
    elif mask == "key-padding":
        pad = torch.zeros(N, S, dtype=torch.bool)
        pad[0, -3:] = True
        kwargs["key_padding_mask"] = pad
    elif mask == "causal":  # self-attention with the causal hint
        key = value = query
        kwargs.update(attn_mask=causal, is_causal=True)
    else:
        key = value = query
        pad = torch.zeros(N, L, dtype=torch.bool)
        pad[1, -2:] = True
        kwargs.update(attn_mask=causal.isinf(), key_padding_mask=pad)  # both bool: torch warns on a mix
    with torch.inference_mode():
        ref, out = mha(query, key, value, **kwargs), q(query, key, value, **kwargs)
    assert (ref[1] is None) == (out[1] is None) == (not need_weights)
    assert worst(ref, out) >= 38.0


def test_unaveraged_weights_and_unbatched_input():
    mha = make()
    q = QuantizedMultiheadAttention.from_float(mha, QuantConfig(mode="weight-only"))
    query, key, value = inputs(mha)
    with torch.inference_mode():
        ref = mha(query, key, value, average_attn_weights=False)
        out = q(query, key, value, average_attn_weights=False)
        assert out[1].shape == (N, HEADS, L, S) and worst(ref, out) >= 38.0
        ref, out = mha(query[:, 0], key[:, 0], value[:, 0]), q(query[:, 0], key[:, 0], value[:, 0])
        assert out[0].shape == (L, E) and worst(ref, out) >= 38.0


def test_train_mode_dropout_and_gradients():
    """In train mode the same seed draws the same dropout mask in float and twin."""
    mha = make(dropout=0.3, batch_first=True).train()
    q = QuantizedMultiheadAttention.from_float(mha, QuantConfig(mode="weight-only")).train()
    query, key, value = inputs(mha)
    for need_weights in (True, False):
        torch.manual_seed(5)
        ref = mha(query, key, value, need_weights=need_weights)
        torch.manual_seed(5)
        out = q(query, key, value, need_weights=need_weights)
        assert worst(ref, out) >= 38.0
    torch.manual_seed(6)
    dropped = q(query, key, value)[0]
    assert sqnr_db(out[0], dropped) < 30.0  # dropout really acts in train mode
    x = query.clone().requires_grad_(True)
    q(x, key, value)[0].sum().backward()
    assert x.grad is not None and bool(torch.isfinite(x.grad).all()) and float(x.grad.abs().sum()) > 0


def test_static_mode_takes_one_range_per_projection_input():
    mha = make(batch_first=True)
    q = QuantizedMultiheadAttention.from_float(mha, QuantConfig(mode="static"))
    assert len(q.weight_range_problems()) == 4  # uncalibrated: every projection says so
    scales = torch.tensor([0.03, 0.04, 0.05, 0.01])
    q.set_input_qparams(scales, torch.tensor([1, -2, 0, 3], dtype=torch.int32))
    assert torch.equal(q.input_scale, scales) and q.v_proj.input_zero_point.item() == 0
    assert q.weight_range_problems() == []


def test_to_float_is_a_plain_attention_with_the_dequantized_weights():
    for option in OPTIONS.values():
        mha = make(**option)
        q = QuantizedMultiheadAttention.from_float(mha, QuantConfig(mode="weight-only"))
        plain = q.to_float().eval()
        assert type(plain) is nn.MultiheadAttention
        params = dict(plain.named_parameters())
        assert sorted(params) == sorted(n for n, _ in mha.named_parameters())
        for name, w in q.dequantized_weights().items():
            assert torch.equal(params[name], w), name
        # fp16 runs in float32 on the upcast weights: the same math, float32 rounding apart
        # (int8 weight-only may run a bf16-activation kernel).
        cast = QuantizedMultiheadAttention.from_float(mha, QuantConfig(dtype="fp16"))
        args = inputs(mha)
        with torch.inference_mode():
            assert worst(cast.to_float().eval()(*args), cast(*args)) >= 100.0


@pytest.mark.parametrize("ext", [".safetensors", ".pt"])
@pytest.mark.parametrize("config_name", ["int8-dynamic", "int4-group", "fp16", "static"])
def test_file_round_trip_is_bit_exact(tmp_path, ext, config_name):
    config = QuantConfig(mode="static") if config_name == "static" else CONFIGS[config_name][0]
    torch.manual_seed(0)
    model = nn.Sequential(make(add_bias_kv=True, kdim=24, vdim=20)).eval()

    class Wrapper(nn.Module):
        def __init__(self):
            super().__init__()
            self.attn = model[0]

        def forward(self, q, k, v):
            return self.attn(q, k, v)[0]

    wrapper = Wrapper().eval()
    samples = [inputs(model[0], seed=i) for i in range(10)]
    result = quantize(wrapper, config, calibration=samples)
    assert result.report.passed and result.report.load_test_passed, result.report.failures
    assert [layer.name for layer in result.report.layers] == ["attn"]
    path = tmp_path / f"q{ext}"
    save_quantized(result, path)
    loaded = load_quantized(path, model=Wrapper().eval())
    assert isinstance(loaded.attn, QuantizedMultiheadAttention)
    state, again = result.model.state_dict(), loaded.state_dict()
    assert list(state) == list(again) and all(torch.equal(state[k], again[k]) for k in state)
    with torch.inference_mode():
        assert torch.equal(result.model(*samples[0]), loaded(*samples[0]))


def test_standalone_non_dynamically_quantizable_linear():
    layer = NonDynamicallyQuantizableLinear(16, 8).eval()
    assert replacement_for(layer) is QuantizedNonDynamicallyQuantizableLinear
    q = QuantizedNonDynamicallyQuantizableLinear.from_float(layer, QuantConfig(mode="dynamic"))
    x = torch.randn(4, 16)
    with torch.inference_mode():
        assert sqnr_db(layer(x), q(x)) >= 30.0
    assert q.quant_meta()["type"] == "NonDynamicallyQuantizableLinear"
    assert type(q.to_float()) is NonDynamicallyQuantizableLinear


# -- torch's transformers ---------------------------------------------------------------------
def encoder_model(**layer_options) -> nn.Module:
    torch.manual_seed(0)
    layer = nn.TransformerEncoderLayer(256, 8, 1024, batch_first=True, dropout=0.0, **layer_options)
    return nn.Sequential(nn.TransformerEncoder(layer, 4, enable_nested_tensor=False), nn.Linear(256, 16)).eval()


def test_the_issue_repro_runs_and_keeps_the_user_model_fast():
    model = encoder_model()
    result = quantize(model, QuantConfig(dtype="int8", mode="dynamic"), calibration=[torch.randn(4, 32, 256)] * 10)
    assert result.report.passed, result.report.failures
    layers = result.model[0].layers
    assert all(layer.activation_relu_or_gelu == 0 for layer in layers)
    assert all(layer.activation_relu_or_gelu == 1 for layer in model[0].layers)  # the user's model untouched
    assert isinstance(model[0].layers[0].self_attn, nn.MultiheadAttention)
    x = torch.randn(2, 32, 256)
    with torch.inference_mode():
        assert sqnr_db(model(x), result.model(x)) >= 30.0
    result.model.train()
    assert sqnr_db(model(x).detach(), result.model(x).detach()) >= 30.0  # train mode: the regular path


def test_transformer_encoder_target_coverage_sqnr_and_reload(tmp_path):
    """The issue's target: >= 95 % of the weight bytes quantized, output SQNR >= 30 dB, bit-exact reload."""
    model = encoder_model()
    g = torch.Generator().manual_seed(2)
    samples = [torch.randn(4, 32, 256, generator=g) for _ in range(8)]
    result = quantize(model, QuantConfig(dtype="int8", mode="dynamic"), calibration=samples)
    report = result.report
    assert report.passed and report.load_test_passed, report.failures
    assert report.coverage["share"] >= 0.95, report.coverage["share"]
    assert report.output_sqnr_db >= 30.0, report.output_sqnr_db
    assert report.compression_ratio > 3.5
    floats = report.coverage["float"]
    assert {row["type"] for row in floats} == {"LayerNorm"} and len(floats) == 8
    assert all("norm layers stay float" in row["reason"] for row in floats)
    for ext in (".safetensors", ".pt"):
        path = tmp_path / f"q{ext}"
        save_quantized(result, path)
        loaded = load_quantized(path, model=encoder_model())
        state, again = result.model.state_dict(), loaded.state_dict()
        assert list(state) == list(again) and all(torch.equal(state[k], again[k]) for k in state)
        with torch.inference_mode():  # eval: the fused path stays off after loading too
            assert torch.equal(result.model(samples[0]), loaded(samples[0]))


def test_nested_tensor_encoder_with_padding_mask():
    torch.manual_seed(0)
    layer = nn.TransformerEncoderLayer(64, 4, 128, batch_first=True, dropout=0.0)
    encoder = nn.TransformerEncoder(layer, 2).eval()  # enable_nested_tensor: the nested fast path

    class Model(nn.Module):
        def __init__(self):
            super().__init__()
            self.encoder = encoder

        def forward(self, x, pad):
            return self.encoder(x, src_key_padding_mask=pad)

    model = Model().eval()
    pad = torch.zeros(3, 10, dtype=torch.bool)
    pad[0, 6:] = True
    samples = [(torch.randn(3, 10, 64), pad) for _ in range(4)]
    result = quantize(model, QuantConfig(mode="dynamic"), calibration=samples)
    assert result.report.passed, result.report.failures
    assert result.model.encoder.use_nested_tensor is False and model.encoder.use_nested_tensor is True
    with torch.inference_mode(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch: "the PyTorch API of nested tensors is in prototype stage"
        ref, out = model(*samples[0]), result.model(*samples[0])
    keep = ~pad
    assert sqnr_db(ref[keep], out[keep]) >= 30.0


def test_full_transformer_encoder_decoder_static():
    torch.manual_seed(0)
    model = nn.Transformer(64, 4, 2, 2, 128, dropout=0.0, batch_first=True).eval()
    g = torch.Generator().manual_seed(1)
    samples = [(torch.randn(2, 10, 64, generator=g), torch.randn(2, 7, 64, generator=g)) for _ in range(10)]
    for mode in ("dynamic", "static"):
        result = quantize(model, QuantConfig(mode=mode), calibration=samples)
        report = result.report
        assert report.passed and report.load_test_passed, report.failures
        attention = [layer.name for layer in report.layers if layer.type == "MultiheadAttention"]
        assert len(attention) == 2 + 2 * 2  # encoder self, decoder self and cross attention
        assert report.coverage["share"] >= 0.95
        assert report.output_sqnr_db >= 30.0, (mode, report.output_sqnr_db)
    cross = result.model.decoder.layers[0].multihead_attn
    assert isinstance(cross, QuantizedMultiheadAttention)
    scales = cross.input_scale  # static: query (decoder) and key/value (encoder memory) ranges differ
    assert scales.shape == (4,) and scales[0] != scales[1] and scales[1] == scales[2]


def test_disable_fused_fast_paths_touches_only_layers_with_quantized_children():
    model = encoder_model()
    assert disable_fused_fast_paths(model) == []  # nothing quantized
    assert disable_fused_fast_paths(model, ["0.layers.1.linear1"]) == ["0.layers.1"]  # no nested path to turn off
    assert [layer.activation_relu_or_gelu for layer in model[0].layers] == [1, 0, 1, 1]


def test_tree_shows_out_proj_as_part_of_the_attention():
    rows = {r.name: r for r in module_table(encoder_model())}
    assert rows["0.layers.0.self_attn"].quantizable
    out_proj = rows["0.layers.0.self_attn.out_proj"]
    assert not out_proj.quantizable and out_proj.reason == "part of the parent MultiheadAttention: quantized with it"


def test_accuracy_target_search_runs_transformer_layers():
    """The automatic fallback swaps twins into a float model one by one: its fused path stays off."""
    torch.manual_seed(0)
    layer = nn.TransformerEncoderLayer(32, 4, 64, batch_first=True, dropout=0.0)
    model = nn.TransformerEncoder(layer, 1, enable_nested_tensor=False).eval()
    g = torch.Generator().manual_seed(1)
    samples = [torch.randn(2, 8, 32, generator=g) for _ in range(3)]
    result = quantize(model, QuantConfig(dtype="int4", mode="weight-only", target_output_sqnr_db=30.0), samples)
    report = result.report
    assert report.accuracy_target is not None and report.accuracy_target["reached"], report.accuracy_target
    assert report.output_sqnr_db >= 30.0
