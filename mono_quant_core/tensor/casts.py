"""fp16 / bf16 casts: the storage dtypes of the cast modes."""

from __future__ import annotations

import torch

CAST_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}


def cast_dtype(name: str) -> torch.dtype | None:
    """The torch dtype of a cast mode ('fp16' | 'bf16'), or None for an integer dtype."""
    return CAST_DTYPES.get(name)
