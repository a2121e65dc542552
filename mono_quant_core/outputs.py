"""Flatten whatever a model returns into its floating-point tensors.

Models return tensors, tuples (LSTM: ``(out, (h, c))``), dicts or
``ModelOutput``-like objects; comparisons work on the flat list.
"""

from __future__ import annotations

from typing import Any

import torch

from .tensor.sqnr import db_from_sums, sqnr_sums


def flat_tensors(value: Any) -> list[torch.Tensor]:
    """Floating-point tensors in ``value``, depth first, in a stable order."""
    if isinstance(value, torch.Tensor):
        return [value] if value.is_floating_point() else []
    if isinstance(value, torch.nn.utils.rnn.PackedSequence):
        return flat_tensors(value.data)
    if isinstance(value, dict):
        return [t for k in value for t in flat_tensors(value[k])]
    if hasattr(value, "to_tuple") and callable(value.to_tuple):  # transformers.ModelOutput
        return [t for v in value.to_tuple() for t in flat_tensors(v)]
    if isinstance(value, (list, tuple)):
        return [t for v in value for t in flat_tensors(v)]
    return []


def describe(value: Any) -> str:
    """A short structural description: ``tensor[2, 10]``, ``tuple(tensor[..], ..)``, ``dict(a: ..)``."""
    if isinstance(value, torch.Tensor):
        return f"tensor[{', '.join(map(str, value.shape))}] {str(value.dtype).removeprefix('torch.')}"
    if isinstance(value, dict) or (hasattr(value, "keys") and hasattr(value, "to_tuple")):
        kind = type(value).__name__ if not isinstance(value, dict) else "dict"
        return f"{kind}(" + ", ".join(f"{k}: {describe(value[k])}" for k in value) + ")"
    if isinstance(value, (list, tuple)):
        return f"{type(value).__name__}(" + ", ".join(describe(v) for v in value) + ")"
    return type(value).__name__


class SqnrAccumulator:
    """Σx² and Σ(x−x̂)² in float64 over many tensors; kept as tensors (no host sync per add)."""

    def __init__(self) -> None:
        self.signal: torch.Tensor | None = None
        self.noise: torch.Tensor | None = None

    def add(self, reference: torch.Tensor, approx: torch.Tensor) -> None:
        s, n = sqnr_sums(reference, approx)
        self.signal = s if self.signal is None else self.signal + s.to(self.signal.device)
        self.noise = n if self.noise is None else self.noise + n.to(self.noise.device)

    def db(self) -> float | None:
        if self.signal is None or self.noise is None:
            return None
        return db_from_sums(float(self.signal), float(self.noise))
