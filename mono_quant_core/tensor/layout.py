"""Shapes that scales and zero points broadcast against: per tensor, per channel, per group."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..errors import ConfigError
from .spec import QuantSpec


def check_shape(shape: tuple[int, ...] | torch.Size, spec: QuantSpec) -> None:
    """Raise ConfigError when ``spec`` cannot apply to a tensor of ``shape``."""
    ndim = len(shape)
    if spec.granularity == "per-channel" and not -ndim <= spec.axis < max(ndim, 1):
        raise ConfigError(f"axis: {spec.axis} is out of range for a tensor of shape {tuple(shape)}")
    if spec.granularity == "per-group" and ndim < 2:
        raise ConfigError(f"granularity: per-group needs a tensor of 2 or more dimensions, got shape {tuple(shape)}")


def num_groups(shape: tuple[int, ...] | torch.Size, group_size: int) -> int:
    """Groups per row of ``shape`` flattened to ``[shape[0], fan_in]``; the last one may be short."""
    fan_in = 1
    for d in shape[1:]:
        fan_in *= int(d)
    return -(-fan_in // int(group_size))


def qparam_shape(shape: tuple[int, ...] | torch.Size, spec: QuantSpec) -> tuple[int, ...]:
    """Shape of the stored scale (and zero point): ``[1]``, ``[C]`` or ``[out, groups]``."""
    check_shape(shape, spec)
    if spec.granularity == "per-tensor":
        return (1,)
    if spec.granularity == "per-channel":
        return (int(shape[spec.axis]),) if len(shape) else (1,)
    return (int(shape[0]), num_groups(shape, spec.group_size))


def to_groups(x: torch.Tensor, group_size: int) -> torch.Tensor:
    """``x`` as ``[out, groups, group_size]``, the ragged last group padded with zeros."""
    rows = x.reshape(x.shape[0], -1)
    groups = num_groups(x.shape, group_size)
    pad = groups * group_size - rows.shape[1]
    if pad:
        rows = F.pad(rows, (0, pad))
    return rows.reshape(rows.shape[0], groups, group_size)


def from_groups(g: torch.Tensor, shape: tuple[int, ...] | torch.Size) -> torch.Tensor:
    """Inverse of :func:`to_groups`: drop the padding and restore ``shape``."""
    fan_in = 1
    for d in shape[1:]:
        fan_in *= int(d)
    return g.reshape(g.shape[0], -1)[:, :fan_in].reshape(shape)


def broadcastable(param: torch.Tensor, ndim: int, spec: QuantSpec) -> torch.Tensor:
    """A per-tensor or per-channel scale/zero point reshaped to broadcast over an ``ndim`` tensor."""
    if spec.granularity == "per-channel" and ndim:
        view = [1] * ndim
        view[spec.axis] = -1
        return param.reshape(view)
    return param.reshape([1] * ndim) if ndim else param.reshape(())
