"""Scale / zero point: torch's observers as an oracle, ranges that contain 0, edge channels."""

from __future__ import annotations

import warnings

import pytest
import torch

from mono_quant_core.tensor import SCALE_EPS, QuantSpec, choose_qparams, dequantize, qrange, quantize


def torch_observer(kind: str, **kwargs):
    """A torch.ao observer, used only as an oracle here (it warns about deprecation)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from torch.ao.quantization import MinMaxObserver, PerChannelMinMaxObserver

        cls = MinMaxObserver if kind == "tensor" else PerChannelMinMaxObserver
        return cls(**kwargs)


def observed_qparams(observer, x):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        observer(x)
        return observer.calculate_qparams()


def mixed_tensor():
    """Gaussian rows plus all-positive, all-negative, constant and all-zero rows."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(8, 33, generator=g) * torch.logspace(-3, 2, 8).reshape(-1, 1)
    x[1] = x[1].abs() + 0.5
    x[2] = -x[2].abs() - 0.25
    x[3] = 1.75
    x[4] = 0.0
    x[5] = -3e-4
    return x


def test_ranges():
    assert qrange("int8", True) == (-127, 127)
    assert qrange("int8", False) == (-128, 127)
    assert qrange("int4", True) == (-7, 7)
    assert qrange("int4", False) == (0, 15)


def test_asymmetric_per_tensor_equals_torch_minmax_observer():
    g = torch.Generator().manual_seed(1)
    for x in (
        torch.randn(64, 48, generator=g) * 3 + 1,
        torch.rand(10, 10, generator=g) + 2,
        -torch.rand(7, 5, generator=g),
    ):
        scale, zp = choose_qparams(x, QuantSpec("int8", False, "per-tensor"))
        ref_scale, ref_zp = observed_qparams(
            torch_observer("tensor", dtype=torch.qint8, qscheme=torch.per_tensor_affine), x
        )
        assert scale.dtype == torch.float32 and zp.dtype == torch.int8
        assert torch.equal(scale, ref_scale.to(torch.float32).reshape(1))
        assert torch.equal(zp.to(torch.int64), ref_zp.to(torch.int64).reshape(1))


@pytest.mark.parametrize("axis", [0, 1])
def test_asymmetric_per_channel_equals_torch_per_channel_observer(axis):
    x = mixed_tensor()
    scale, zp = choose_qparams(x, QuantSpec("int8", False, "per-channel", axis=axis))
    ref_scale, ref_zp = observed_qparams(
        torch_observer("channel", ch_axis=axis, dtype=torch.qint8, qscheme=torch.per_channel_affine), x
    )
    assert torch.equal(scale, ref_scale.to(torch.float32))
    assert torch.equal(zp.to(torch.int64), ref_zp.to(torch.int64))


def test_symmetric_per_channel_equals_torch_with_range_127():
    x = mixed_tensor()
    scale, zp = choose_qparams(x, QuantSpec("int8", True, "per-channel"))
    ref_scale, ref_zp = observed_qparams(
        torch_observer(
            "channel", ch_axis=0, dtype=torch.qint8, qscheme=torch.per_channel_symmetric, quant_min=-127, quant_max=127
        ),
        x,
    )
    assert zp is None and torch.equal(ref_zp, torch.zeros_like(ref_zp))
    assert torch.equal(scale, ref_scale.to(torch.float32))


@pytest.mark.parametrize("dtype", ["int8", "int4"])
@pytest.mark.parametrize("symmetric", [True, False])
def test_edge_channels_are_finite_and_zero_is_exact(dtype, symmetric):
    x = mixed_tensor()
    spec = QuantSpec(dtype, symmetric, "per-channel")
    scale, zp = choose_qparams(x, spec)
    assert bool(torch.isfinite(scale).all()) and bool((scale >= SCALE_EPS).all())
    assert float(scale[4]) == SCALE_EPS  # all-zero channel: the floor, like torch
    q = quantize(x, scale, zp, spec)
    assert int(q.min()) >= spec.qmin and int(q.max()) <= spec.qmax
    xhat = dequantize(q, scale, zp, spec)
    assert not bool(torch.isnan(xhat).any())
    assert torch.equal(xhat[4], torch.zeros(33))  # 0 is on every grid exactly
    # Constant and one-signed channels come back accurate (relative error <= 1/2 step of the range).
    for row in (1, 2, 3, 5):
        err = (x[row] - xhat[row]).abs().max()
        assert float(err) <= float(scale[row]) / 2 * (1 + 1e-5), row


def test_zero_point_is_rounded_then_clamped():
    spec = QuantSpec("int8", False, "per-tensor")
    scale, zp = choose_qparams(torch.tensor([[-1.0, 3.0]]), spec)
    assert float(scale) == pytest.approx(4.0 / 255)
    assert int(zp) == -128 - round(-1.0 / float(scale))  # -128 + 64 = -64
    _, zp_pos = choose_qparams(torch.tensor([[2.0, 3.0]]), spec)  # range widened to [0, 3]
    assert int(zp_pos) == -128
    _, zp_neg = choose_qparams(torch.tensor([[-2.0, -3.0]]), spec)  # range widened to [-3, 0]
    assert int(zp_neg) == 127
    _, zp4 = choose_qparams(torch.tensor([[-2.0, -3.0]]), QuantSpec("int4", False, "per-tensor"))
    assert int(zp4) == 15


def test_per_group_shapes_with_ragged_last_group():
    x = torch.randn(6, 3, 5, 5)  # a conv weight: fan_in 75, groups of 32 -> 32, 32, 11
    spec = QuantSpec("int8", True, "per-group", group_size=32)
    scale, _ = choose_qparams(x, spec)
    assert scale.shape == (6, 3)
    flat = x.reshape(6, -1)
    assert torch.equal(scale[:, 2], flat[:, 64:].abs().amax(dim=1) / 127)
    assert torch.equal(scale[:, 0], flat[:, :32].abs().amax(dim=1) / 127)
