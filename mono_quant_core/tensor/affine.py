"""Quantize to integer codes and dequantize back: ``q = clamp(round(x / s) + zp)``, ``x = (q - zp) * s``."""

from __future__ import annotations

import torch

from .layout import broadcastable, check_shape, from_groups, to_groups
from .spec import QuantSpec


def quantize(x: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor | None, spec: QuantSpec) -> torch.Tensor:
    """Integer codes of ``x`` as an int8 tensor of ``x``'s shape (int4 codes unpacked, in [qmin, qmax])."""
    check_shape(x.shape, spec)
    xf = x.detach().to(torch.float32)
    grouped = spec.granularity == "per-group"
    if grouped:
        xf = to_groups(xf, spec.group_size)  # the ragged last group zero-padded
    # One float temporary, updated in place: a weight costs 4 bytes per value
    # on top of its codes, not 12.
    q = float_codes(xf, scale, zero_point, spec).to(torch.int8)
    return from_groups(q, x.shape) if grouped else q


def dequantize(q: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor | None, spec: QuantSpec) -> torch.Tensor:
    """Float32 values of integer codes ``q`` (any integer dtype, unpacked)."""
    check_shape(q.shape, spec)
    grouped = spec.granularity == "per-group"
    qf = q.to(torch.float32, copy=True)
    if grouped:
        qf = to_groups(qf, spec.group_size)
    x = dequantize_(qf, scale, zero_point, spec)  # qf is a fresh copy: update it in place
    return from_groups(x, q.shape) if grouped else x


def float_codes(
    x: torch.Tensor,
    scale: torch.Tensor,
    zero_point: torch.Tensor | None,
    spec: QuantSpec,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """``clamp(round(x / s) + zp)`` as float32 codes in ``x``'s shape.  Per-group: ``x`` holds
    whole groups (``[out, groups, group_size]``, or rows of a multiple of the group size).

    ``out``: a contiguous float32 buffer with as many values to write them into (no
    allocation; not for inputs that need gradients).  Without it one new tensor
    is made and updated in place.
    """
    xv, s, zp = _broadcast(x, scale, zero_point, spec)
    q = torch.div(xv, s, out=None if out is None else out.view(xv.shape))
    q.round_()
    if zp is not None:
        q.add_(zp)
    return q.clamp_(spec.qmin, spec.qmax).view(x.shape)


def dequantize_(
    q: torch.Tensor,
    scale: torch.Tensor,
    zero_point: torch.Tensor | None,
    spec: QuantSpec,
) -> torch.Tensor:
    """``(q - zp) * s`` in place on contiguous float32 codes ``q`` (laid out as for :func:`float_codes`)."""
    qv, s, zp = _broadcast(q, scale, zero_point, spec)
    if zp is not None:
        qv.sub_(zp)
    qv.mul_(s)
    return q


def _broadcast(
    x: torch.Tensor,
    scale: torch.Tensor,
    zero_point: torch.Tensor | None,
    spec: QuantSpec,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """``x`` (per-group: as ``[out, groups, group_size]``) and its float32 scale and zero point
    shaped to broadcast against it."""
    if spec.granularity == "per-group":
        x = x.view(x.shape[0], -1, spec.group_size)
        s = scale.reshape(scale.shape[0], -1, 1)
        zp = None if zero_point is None else zero_point.reshape(scale.shape[0], -1, 1)
    else:
        s = broadcastable(scale, x.ndim, spec)
        zp = None if zero_point is None else broadcastable(zero_point, x.ndim, spec)
    return x, s.to(torch.float32), None if zp is None else zp.to(torch.float32)
