"""The observer interface and the range → (scale, zero point) rule they share."""

from __future__ import annotations

import torch

from ..errors import CalibrationError
from ..tensor.activations import ACT_QMAX, ACT_QMIN, activation_qparams_from_range


def affine_qparams(
    lo: torch.Tensor, hi: torch.Tensor, qmin: int = ACT_QMIN, qmax: int = ACT_QMAX
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-tensor asymmetric qparams for the range ``[lo, hi]`` widened to contain 0: the
    activations' rule (``tensor.activation_qparams_from_range``); only [-128, 127] exists."""
    if (qmin, qmax) != (ACT_QMIN, ACT_QMAX):
        raise ValueError(f"activation range [{qmin}, {qmax}]: only [{ACT_QMIN}, {ACT_QMAX}] is supported")
    return activation_qparams_from_range(lo, hi)


def as_float32(x: torch.Tensor) -> torch.Tensor:
    """A detached float32 view of ``x`` (half and bfloat16 are widened; float32 is not copied)."""
    x = x.detach()
    return x if x.dtype == torch.float32 else x.to(torch.float32)


def not_observed(kind: str) -> CalibrationError:
    """The error for asking an observer that has seen nothing for its range."""
    return CalibrationError(f"{kind} observer: no non-empty floating-point batch was observed")


class Observer:
    """Collects statistics of one activation over many batches.

    ``update`` keeps its statistics as tensors on the input's device and never
    synchronises with the host; ``min_max`` and ``qparams`` are called once,
    at the end.
    """

    kind = "observer"

    def update(self, x: torch.Tensor) -> None:
        """Fold one batch of activations into the statistics (empty tensors are ignored)."""
        raise NotImplementedError

    def min_max(self, qmin: int = -128, qmax: int = 127) -> tuple[torch.Tensor, torch.Tensor]:
        """The range ``(lo, hi)`` the quantization grid should cover, as float32 tensors."""
        raise NotImplementedError

    @property
    def observed(self) -> bool:
        """True once a non-empty batch has been seen."""
        raise NotImplementedError

    def qparams(self, qmin: int = -128, qmax: int = 127) -> tuple[torch.Tensor, torch.Tensor]:
        """``(scale float32, zero_point int32)``, per tensor, asymmetric, for ``[qmin, qmax]``."""
        lo, hi = self.min_max(qmin, qmax)
        return affine_qparams(lo, hi, qmin, qmax)
