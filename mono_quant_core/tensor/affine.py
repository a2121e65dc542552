"""Quantize to integer codes and dequantize back: ``q = clamp(round(x / s) + zp)``, ``x = (q - zp) * s``."""

from __future__ import annotations

import torch

from .layout import broadcastable, check_shape, from_groups, to_groups
from .spec import QuantSpec


def quantize(
    x: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor | None, spec: QuantSpec
) -> torch.Tensor:
    """Integer codes of ``x`` as an int8 tensor of ``x``'s shape (int4 codes unpacked, in [qmin, qmax])."""
    check_shape(x.shape, spec)
    xf = x.detach().to(torch.float32)
    grouped = spec.granularity == "per-group"
    if grouped:
        xf = to_groups(xf, spec.group_size)
        s = scale.reshape(scale.shape[0], -1, 1)
        zp = None if zero_point is None else zero_point.reshape(scale.shape[0], -1, 1)
    else:
        s = broadcastable(scale, xf.ndim, spec)
        zp = None if zero_point is None else broadcastable(zero_point, xf.ndim, spec)
    q = torch.round(xf / s)
    if zp is not None:
        q = q + zp.to(torch.float32)
    q = torch.clamp(q, spec.qmin, spec.qmax).to(torch.int8)
    return from_groups(q, x.shape) if grouped else q


def dequantize(
    q: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor | None, spec: QuantSpec
) -> torch.Tensor:
    """Float32 values of integer codes ``q`` (any integer dtype, unpacked)."""
    check_shape(q.shape, spec)
    grouped = spec.granularity == "per-group"
    if grouped:
        qf = to_groups(q.to(torch.float32), spec.group_size)
        s = scale.reshape(scale.shape[0], -1, 1)
        zp = None if zero_point is None else zero_point.reshape(scale.shape[0], -1, 1)
    else:
        qf = q.to(torch.float32)
        s = broadcastable(scale, q.ndim, spec)
        zp = None if zero_point is None else broadcastable(zero_point, q.ndim, spec)
    if zp is not None:
        qf = qf - zp.to(torch.float32)
    x = qf * s.to(torch.float32)
    return from_groups(x, q.shape) if grouped else x
