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
    # One float temporary, updated in place: a weight costs 4 bytes per value
    # on top of its codes, not 12 (the same operations, so the same codes).
    q = torch.div(xf, s)
    q.round_()
    if zp is not None:
        q.add_(zp.to(torch.float32))
    q = q.clamp_(spec.qmin, spec.qmax).to(torch.int8)
    return from_groups(q, x.shape) if grouped else q


def dequantize(
    q: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor | None, spec: QuantSpec
) -> torch.Tensor:
    """Float32 values of integer codes ``q`` (any integer dtype, unpacked)."""
    check_shape(q.shape, spec)
    grouped = spec.granularity == "per-group"
    if grouped:
        qf = to_groups(q.to(torch.float32, copy=True), spec.group_size)
        s = scale.reshape(scale.shape[0], -1, 1)
        zp = None if zero_point is None else zero_point.reshape(scale.shape[0], -1, 1)
    else:
        qf = q.to(torch.float32, copy=True)
        s = broadcastable(scale, q.ndim, spec)
        zp = None if zero_point is None else broadcastable(zero_point, q.ndim, spec)
    if zp is not None:
        qf = qf.sub_(zp.to(torch.float32))
    x = qf.mul_(s.to(torch.float32))  # qf is a fresh copy: update it in place
    return from_groups(x, q.shape) if grouped else x
