"""Activation quantization: per-tensor asymmetric int8 ([-128, 127]), simulated in float."""

from __future__ import annotations

import torch

from .affine import dequantize_, float_codes
from .qparams import qparams_from_range
from .spec import QuantSpec

#: Activations: int8, asymmetric, one scale and zero point per tensor.
ACT_SPEC = QuantSpec("int8", False, "per-tensor")
ACT_QMIN, ACT_QMAX = ACT_SPEC.qmin, ACT_SPEC.qmax  # -128, 127


def activation_qparams_from_range(lo: torch.Tensor, hi: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(scale float32, zero_point int32)`` for the activation range ``[lo, hi]`` (widened to contain 0)."""
    scale, zero_point = qparams_from_range(lo.detach(), hi.detach(), ACT_SPEC)
    assert zero_point is not None  # ACT_SPEC is asymmetric: it always has a zero point
    return scale, zero_point.to(torch.int32)


def activation_qparams(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Min/max ``(scale float32 [1], zero_point int32 [1])`` of one batch."""
    flat = x.detach().reshape(1, -1)
    return activation_qparams_from_range(torch.amin(flat, dim=1), torch.amax(flat, dim=1))


def fake_quantize(x: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor) -> torch.Tensor:
    """``x`` rounded to the int8 grid of ``(scale, zero_point)`` and back, clamped, in ``x``'s dtype."""
    s, zp = scale.to(x.device), zero_point.to(x.device)
    q = float_codes(x.to(torch.float32), s, zp, ACT_SPEC)
    return dequantize_(q, s, zp, ACT_SPEC).to(x.dtype)
