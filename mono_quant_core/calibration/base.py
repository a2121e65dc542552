"""The observer interface and the range → (scale, zero point) rule they share."""

from __future__ import annotations

import torch

from ..errors import CalibrationError

_EPS = torch.finfo(torch.float32).eps


def affine_qparams(
    lo: torch.Tensor, hi: torch.Tensor, qmin: int = -128, qmax: int = 127
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-tensor asymmetric qparams for the range ``[lo, hi]`` widened to contain 0.

    Returns a float32 scale (floored at float32 eps, so constant or all-zero
    inputs give a finite scale) and an int32 zero point, rounded then clamped.
    """
    lo = torch.clamp(lo.detach().to(torch.float32), max=0.0)
    hi = torch.clamp(hi.detach().to(torch.float32), min=0.0)
    scale = torch.clamp((hi - lo) / float(qmax - qmin), min=_EPS)
    zero_point = torch.clamp(qmin - torch.round(lo / scale), qmin, qmax).to(torch.int32)
    return scale, zero_point


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
