"""Quantize → dequantize: the half-step error bound and SQNR floors on Gaussian weights."""

from __future__ import annotations

import pytest
import torch

import mono_quant_core.tensor.storage as storage
from mono_quant_core.tensor import (
    QuantSpec,
    choose_qparams,
    db_from_sums,
    dequantize,
    dequantize_weight,
    dequantize_weight_into,
    encode,
    quantize,
    quantize_weight,
    quantize_weight_measured,
    sqnr_db,
)

SPECS = [
    QuantSpec(dtype, symmetric, granularity, axis, group_size)
    for dtype in ("int8", "int4")
    for symmetric in (True, False)
    for granularity, axis, group_size in (
        ("per-tensor", 0, 128),
        ("per-channel", 0, 128),
        ("per-channel", 1, 128),
        ("per-group", 0, 24),
    )
]


def gaussian(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def step_of(scale, spec, shape):
    """Each element's scale, broadcast to ``shape``."""
    if spec.granularity == "per-group":
        rows = scale.repeat_interleave(spec.group_size, dim=1)
        fan_in = 1
        for d in shape[1:]:
            fan_in *= d
        return rows[:, :fan_in].reshape(shape)
    if spec.granularity == "per-channel":
        view = [1] * len(shape)
        view[spec.axis] = -1
        return scale.reshape(view).expand(shape)
    return scale.expand(shape)


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: f"{s.dtype}-{s.scheme}-{s.granularity}-{s.axis}")
def test_error_is_at_most_half_a_step(spec):
    x = gaussian(12, 5, 10, seed=3) * torch.linspace(0.01, 10, 12).reshape(-1, 1, 1)  # fan_in 50: ragged groups
    scale, zp = choose_qparams(x, spec)
    q = quantize(x, scale, zp, spec)
    assert q.dtype == torch.int8 and q.shape == x.shape
    assert int(q.min()) >= spec.qmin and int(q.max()) <= spec.qmax
    err = (x - dequantize(q, scale, zp, spec)).abs()
    bound = step_of(scale, spec, x.shape) / 2
    # Min/max ranges put every element in range; allow float32 rounding of x / scale.
    assert bool((err <= bound * (1 + 1e-5) + 1e-12).all()), float((err - bound).max())


@pytest.mark.parametrize(
    "dtype,symmetric,granularity,group,floor",
    [
        ("int8", True, "per-channel", 128, 40.0),
        ("int8", False, "per-channel", 128, 40.0),
        ("int8", True, "per-group", 128, 40.0),
        ("int4", True, "per-group", 128, 17.0),
        ("int4", False, "per-group", 128, 17.0),
    ],
)
def test_weight_sqnr_floors(dtype, symmetric, granularity, group, floor):
    w = gaussian(512, 512, seed=1)
    spec = QuantSpec(dtype, symmetric, granularity, 0, group)
    qt = quantize_weight(w, spec)
    db = sqnr_db(w, dequantize_weight(qt.data, qt.scale, qt.zero_point, spec, w.shape))
    assert db >= floor, db


def test_asymmetric_beats_symmetric_on_one_signed_channels():
    w = gaussian(256, 512, seed=2).abs()  # every channel all-positive (e.g. after a ReLU-like fold)
    dbs = {}
    for symmetric in (True, False):
        spec = QuantSpec("int8", symmetric, "per-channel")
        qt = quantize_weight(w, spec)
        dbs[symmetric] = sqnr_db(w, dequantize_weight(qt.data, qt.scale, qt.zero_point, spec, w.shape))
    assert dbs[False] >= 40.0 and dbs[False] > dbs[True] + 4.0, dbs  # one more bit used: ~6 dB


@pytest.mark.parametrize("dtype,floor", [(torch.float16, 60.0), (torch.bfloat16, 45.0)])
def test_cast_sqnr(dtype, floor):
    w = gaussian(512, 512, seed=4)
    assert sqnr_db(w, w.to(dtype)) >= floor


def test_conv_weight_groups_flatten_input_dims():
    w = gaussian(8, 6, 3, 3, seed=5)  # fan_in 54: groups of 16 -> 16, 16, 16, 6
    spec = QuantSpec("int4", True, "per-group", group_size=16)
    qt = quantize_weight(w, spec)
    assert qt.data.shape == (8, 27) and qt.data.dtype == torch.uint8 and qt.scale.shape == (8, 4)
    back = dequantize_weight(qt.data, qt.scale, qt.zero_point, spec, w.shape)
    assert back.shape == w.shape and sqnr_db(w, back) >= 17.0


def test_half_and_bfloat16_inputs_quantize_like_float32():
    w = gaussian(64, 40, seed=6).to(torch.bfloat16)
    spec = QuantSpec("int8", True, "per-channel")
    a = quantize_weight(w, spec)
    b = quantize_weight(w.to(torch.float32), spec)
    assert torch.equal(a.data, b.data) and torch.equal(a.scale, b.scale)


@pytest.mark.parametrize("dtype", ["int8", "int4"])
@pytest.mark.parametrize("scheme", ["symmetric", "asymmetric"])
@pytest.mark.parametrize(
    "granularity,axis,group_size",
    [
        ("per-channel", 0, 16),
        ("per-channel", 1, 16),
        ("per-tensor", 0, 16),
        ("per-group", 0, 16),  # 40 values a row: a ragged, zero-padded last group
        ("per-group", 0, 8),  # whole groups
    ],
)
@pytest.mark.parametrize("layout", ["float32", "transposed", "bfloat16"])
def test_blockwise_weights_equal_the_whole_tensor_formulas(
    dtype, scheme, granularity, axis, group_size, layout, monkeypatch
):
    """Weights larger than a block are quantized block by block of rows: the stored data, scales and
    zero points equal the whole-tensor formulas exactly, and the measured sums equal sqnr_db's.
    Also for a non-contiguous weight and a bfloat16 one (both staged through a float32 block)."""
    monkeypatch.setattr(storage, "BLOCK_VALUES", 3 * 40)  # 40 values a row: blocks of 3 rows, one short
    g = torch.Generator().manual_seed(7)
    w = torch.randn(20, 5, 8, generator=g) * torch.rand(20, 1, 1, generator=g)
    w[4] = 0.0  # an all-zero row
    if layout == "transposed":
        w = w.transpose(1, 2).contiguous().transpose(1, 2)
        assert not w.is_contiguous()
    elif layout == "bfloat16":
        w = w.to(torch.bfloat16)
    spec = QuantSpec(dtype, scheme == "symmetric", granularity, axis, group_size)
    scale, zp = choose_qparams(w, spec)
    expected = encode(quantize(w, scale, zp, spec), spec)

    qt, (signal, noise) = quantize_weight_measured(w, spec)
    assert torch.equal(qt.data, expected)
    assert torch.equal(qt.scale, scale)
    assert (qt.zero_point is None) == (zp is None) and (zp is None or torch.equal(qt.zero_point, zp))
    deq = dequantize_weight(qt.data, qt.scale, qt.zero_point, spec, w.shape)
    assert db_from_sums(float(signal), float(noise)) == pytest.approx(sqnr_db(w, deq), abs=1e-6)


@pytest.mark.parametrize("scheme", ["symmetric", "asymmetric"])
@pytest.mark.parametrize("granularity", ["per-channel", "per-tensor", "per-group"])
def test_blockwise_int4_rows_of_odd_length_pack_like_encode(scheme, granularity, monkeypatch):
    """Rows of 21 codes pack into 11 bytes, the last high nibble 0, block by block as encode() packs them."""
    monkeypatch.setattr(storage, "BLOCK_VALUES", 2 * 21)  # blocks of 2 rows, the last one short
    w = torch.randn(9, 3, 7, generator=torch.Generator().manual_seed(8))
    spec = QuantSpec("int4", scheme == "symmetric", granularity, 0, 7)  # 3 whole groups a row
    scale, zp = choose_qparams(w, spec)
    expected = encode(quantize(w, scale, zp, spec), spec)
    qt = quantize_weight(w, spec)
    assert qt.data.shape == (9, 11) and torch.equal(qt.data, expected)
    assert torch.all(qt.data[:, -1] >> 4 == 0)


@pytest.mark.parametrize("dtype", ["int8", "int4"])
@pytest.mark.parametrize("scheme", ["symmetric", "asymmetric"])
@pytest.mark.parametrize(
    "granularity,group_size", [("per-channel", 8), ("per-tensor", 8), ("per-group", 8), ("per-group", 16)]
)  # 16: a ragged last group
def test_dequantize_into_a_buffer_equals_dequantize(dtype, scheme, granularity, group_size):
    w = torch.randn(12, 5, 8, generator=torch.Generator().manual_seed(9))
    spec = QuantSpec(dtype, scheme == "symmetric", granularity, 0, group_size)
    qt = quantize_weight(w, spec)
    out = torch.full((12 * 40 + 7,), float("nan"))[: 12 * 40]  # a bigger buffer's start, as a scratch block
    got = dequantize_weight_into(qt.data, qt.scale, qt.zero_point, spec, w.shape, out)
    assert got.shape == w.shape and got.data_ptr() == out.data_ptr()
    assert torch.equal(got, dequantize_weight(qt.data, qt.scale, qt.zero_point, spec, w.shape))
