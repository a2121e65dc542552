"""Sizes and SQNR of whole models and layers."""

from __future__ import annotations

import torch
from torch import nn

from .outputs import SqnrAccumulator


def state_bytes(model: nn.Module) -> int:
    """Bytes of every tensor in the state dict, counting shared storage once."""
    seen = set()
    total = 0
    for t in model.state_dict(keep_vars=True).values():
        if not isinstance(t, torch.Tensor):
            continue
        key = (t.untyped_storage().data_ptr(), t.storage_offset(), t.numel(), t.dtype)
        if t.device.type == "meta" or key in seen:
            continue
        seen.add(key)
        total += t.numel() * t.element_size()
    return total


def weight_sqnr_db(reference: dict[str, torch.Tensor], approx: dict[str, torch.Tensor]) -> float | None:
    """SQNR over all the named weights together (float64 sums)."""
    acc = SqnrAccumulator()
    for name, ref in reference.items():
        acc.add(ref, approx[name])
    return acc.db()
