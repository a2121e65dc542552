"""Every quantized module type against the contract of docs/architecture.md.

Output SQNR against the float module (>= 35 dB dynamic, >= 40 dB weight-only
int8), state_dict -> from_meta -> load_state_dict gives bit-identical outputs,
dtype moves keep scales float32, and the float module is never modified.
"""

from __future__ import annotations

import json
import warnings
from copy import deepcopy

import pytest
import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save
from torch import nn

from mono_quant_core.config import QuantConfig
from mono_quant_core.modules import REPLACEMENTS, QuantizedModule, replacement_for
from mono_quant_core.outputs import flat_tensors
from mono_quant_core.tensor import sqnr_db


def _seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def make_case(name: str):
    """(float module in eval mode, input) for each replaceable type."""
    torch.manual_seed(0)
    g = _seeded(1)
    if name == "Linear":
        return nn.Linear(96, 80), torch.randn(2, 5, 96, generator=g)
    if name == "Conv1d":
        return nn.Conv1d(6, 16, 5, padding=2), torch.randn(2, 6, 30, generator=g)
    if name == "Conv2d":
        return nn.Conv2d(8, 16, 3, stride=2, padding=1, padding_mode="reflect"), torch.randn(2, 8, 12, 12, generator=g)
    if name == "Conv3d":
        return nn.Conv3d(4, 8, 3, padding=1, groups=2), torch.randn(2, 4, 5, 5, 5, generator=g)
    if name == "ConvTranspose1d":
        return nn.ConvTranspose1d(6, 16, 5, stride=2, padding=2, output_padding=1), torch.randn(2, 6, 30, generator=g)
    if name == "ConvTranspose2d":
        return nn.ConvTranspose2d(8, 16, 3, stride=2, padding=1, groups=2), torch.randn(2, 8, 12, 12, generator=g)
    if name == "Embedding":
        return nn.Embedding(60, 40, padding_idx=3), torch.randint(0, 60, (4, 9), generator=g)
    if name == "LSTM":
        return nn.LSTM(24, 32, num_layers=2, batch_first=True, bidirectional=True), torch.randn(3, 7, 24, generator=g)
    if name == "GRU":
        return nn.GRU(24, 32, num_layers=2), torch.randn(7, 3, 24, generator=g)
    raise KeyError(name)


TYPES = ("Linear", "Conv1d", "Conv2d", "Conv3d", "ConvTranspose1d", "ConvTranspose2d", "Embedding", "LSTM", "GRU")


def run(module: nn.Module, x) -> list[torch.Tensor]:
    with torch.inference_mode():
        return flat_tensors(module(x))


def output_sqnr(reference: list[torch.Tensor], approx: list[torch.Tensor]) -> float:
    assert len(reference) == len(approx)
    return min(sqnr_db(a, b) for a, b in zip(reference, approx, strict=True))


def snapshot(module: nn.Module) -> dict:
    return {
        "tensors": {
            k: (v.detach().clone(), v.dtype, v.requires_grad)
            for k, v in list(module.named_parameters()) + list(module.named_buffers())
        },
        "objects": {k: v for k, v in module.named_parameters()},
    }


def assert_unchanged(module: nn.Module, before: dict) -> None:
    now = dict(list(module.named_parameters()) + list(module.named_buffers()))
    assert list(now) == list(before["tensors"])
    for k, (value, dtype, grad) in before["tensors"].items():
        assert now[k].dtype == dtype and now[k].requires_grad == grad and torch.equal(now[k].detach(), value), k
    for k, p in module.named_parameters():
        assert p is before["objects"][k], k


def reload(q: QuantizedModule, float_module: nn.Module, assign: bool) -> QuantizedModule:
    """Through safetensors bytes and JSON, as a file would."""
    tensors = st_load(st_save({k: v.contiguous() for k, v in q.state_dict().items()}))
    fresh = type(q).from_meta(json.loads(json.dumps(q.quant_meta())), float_module)
    fresh.load_state_dict(tensors, strict=True, assign=assign)
    return fresh.eval()


def test_registry_covers_every_supported_type():
    from mono_quant_core.config import SUPPORTED_TYPES

    assert sorted(REPLACEMENTS) == sorted(SUPPORTED_TYPES)
    for name in TYPES:
        module, _ = make_case(name)
        assert replacement_for(module) is REPLACEMENTS[name]

    class MyLinear(nn.Linear):  # a subclass may change forward: not replaced
        pass

    assert replacement_for(MyLinear(2, 2)) is None
    assert replacement_for(nn.LayerNorm(4)) is None


@pytest.mark.parametrize("name", TYPES)
@pytest.mark.parametrize("mode,floor", [("dynamic", 35.0), ("weight-only", 40.0)])
def test_output_sqnr_round_trip_and_float_module_unchanged(name, mode, floor):
    module, x = make_case(name)
    before = snapshot(module)
    reference = run(module, x)
    q = replacement_for(module).from_float(module, QuantConfig(mode=mode)).eval()
    out = run(q, x)
    db = output_sqnr(reference, out)
    assert db >= floor, f"{name} {mode}: {db:.1f} dB"
    assert q.kernel != "pending"
    for assign in (True, False):
        again = run(reload(q, module, assign), x)
        assert all(torch.equal(a, b) for a, b in zip(out, again, strict=True)), f"{name}: reloaded output differs"
    assert_unchanged(module, before)
    assert not hasattr(module, "kernel")


@pytest.mark.parametrize("name", TYPES)
def test_metadata_dequantized_weights_and_to_float(name):
    module, _x = make_case(name)
    q = replacement_for(module).from_float(module, QuantConfig(mode="weight-only"))
    meta = q.quant_meta()
    assert json.loads(json.dumps(meta)) == meta
    for key in ("type", "dtype", "mode", "scheme", "granularity", "axis", "group_size", "shape"):
        assert key in meta
    assert meta["type"] == name and meta["shape"] == list(
        module.weight_ih_l0.shape if name in ("LSTM", "GRU") else module.weight.shape
    )
    deq = q.dequantized_weights()
    float_weights = {k: v for k, v in module.named_parameters() if k.startswith("weight")}
    assert sorted(deq) == sorted(float_weights)
    for k, w in deq.items():
        assert w.dtype == torch.float32 and w.shape == float_weights[k].shape and sqnr_db(float_weights[k], w) > 40
    plain = q.to_float()
    assert type(plain) is type(module)
    for k, w in deq.items():
        assert torch.equal(getattr(plain, k), w)
    assert q.weight_range_problems() == []
    assert q.quantized_bytes() == sum(t.numel() * t.element_size() for t in q.state_dict().values())


@pytest.mark.parametrize("name", TYPES)
@pytest.mark.parametrize("move", ["half", "to-float16", "bfloat16", "double"])
def test_dtype_moves_keep_scales_float32(name, move):
    module, x = make_case(name)
    q = replacement_for(module).from_float(module, QuantConfig(mode="weight-only"))
    ints_before = {k: v.clone() for k, v in q.state_dict().items() if not v.is_floating_point()}
    scales_before = {k: v.clone() for k, v in q.state_dict().items() if k.endswith("_scale")}
    dtype = {"half": torch.float16, "to-float16": torch.float16, "bfloat16": torch.bfloat16, "double": torch.float64}[
        move
    ]
    moved = {"half": q.half, "to-float16": lambda: q.to(torch.float16), "bfloat16": q.bfloat16, "double": q.double}[
        move
    ]()
    assert moved is q
    state = q.state_dict()
    for k, v in scales_before.items():
        assert state[k].dtype == torch.float32 and torch.equal(state[k], v), k
    for k, v in ints_before.items():
        assert torch.equal(state[k], v), k
    xin = x.to(dtype) if x.is_floating_point() else x
    out = run(q, xin)
    assert all(t.dtype == dtype for t in out)
    floor = {torch.float16: 35.0, torch.bfloat16: 25.0, torch.float64: 40.0}[dtype]
    assert output_sqnr(run(module, x), out) >= floor
    # Back to float32: the quantized state is exactly what it was.
    q.float()
    assert all(torch.equal(q.state_dict()[k], v) for k, v in {**ints_before, **scales_before}.items())


@pytest.mark.parametrize("name", TYPES)
def test_no_warnings_in_forward(name):
    """Building, packing (first forward) and running again emit no warning of any kind."""
    module, x = make_case(name)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for mode in ("dynamic", "weight-only"):
            q = replacement_for(module).from_float(module, QuantConfig(mode=mode))
            first, second = run(q, x), run(q, x)
            assert all(torch.equal(a, b) for a, b in zip(first, second, strict=True))
            assert q.kernel != "pending"  # the forward really went through a kernel
    assert [f"{w.category.__name__}: {w.message}" for w in caught] == []


def test_pickling_drops_kernel_state():
    module, x = make_case("Linear")
    q = replacement_for(module).from_float(module, QuantConfig())
    out = run(q, x)
    copy = deepcopy(q)  # goes through __getstate__, as pickling does
    assert copy.kernel == "pending" and copy._kernel_state is None
    assert all(torch.equal(a, b) for a, b in zip(out, run(copy, x), strict=True))
