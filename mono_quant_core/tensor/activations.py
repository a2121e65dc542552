"""Activation quantization: per-tensor asymmetric int8 ([-128, 127]), simulated in float."""

from __future__ import annotations

import torch

from .qparams import SCALE_EPS

ACT_QMIN, ACT_QMAX = -128, 127


def activation_qparams(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Min/max ``(scale float32 [1], zero_point int32 [1])`` of one batch (range widened to contain 0)."""
    lo, hi = torch.aminmax(x.detach().reshape(-1))
    lo = torch.clamp(lo.to(torch.float32), max=0.0).reshape(1)
    hi = torch.clamp(hi.to(torch.float32), min=0.0).reshape(1)
    scale = torch.clamp((hi - lo) / float(ACT_QMAX - ACT_QMIN), min=SCALE_EPS)
    zero_point = torch.clamp(ACT_QMIN - torch.round(lo / scale), ACT_QMIN, ACT_QMAX)
    return scale, zero_point.to(torch.int32)


def fake_quantize(x: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor) -> torch.Tensor:
    """``x`` rounded to the int8 grid of ``(scale, zero_point)`` and back, clamped, in ``x``'s dtype."""
    s = scale.to(device=x.device, dtype=torch.float32)
    zp = zero_point.to(device=x.device, dtype=torch.float32)
    q = torch.clamp(torch.round(x.to(torch.float32) / s) + zp, ACT_QMIN, ACT_QMAX)
    return ((q - zp) * s).to(x.dtype)
