"""Scale and zero point of a tensor for a QuantSpec (the same rule as torch's min/max observers)."""

from __future__ import annotations

import torch

from .layout import check_shape, to_groups
from .spec import QuantSpec

#: Smallest scale, as torch's observers use: constant or all-zero slices stay finite.
SCALE_EPS = torch.finfo(torch.float32).eps


def _amin_amax(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Min and max over the last dimension.  Two reductions: on CPU (torch 2.13)
    ``torch.aminmax`` is about twice as slow as ``amin`` and ``amax`` together."""
    return torch.amin(x, dim=-1), torch.amax(x, dim=-1)


def min_max(x: torch.Tensor, spec: QuantSpec) -> tuple[torch.Tensor, torch.Tensor]:
    """Float32 ``(lo, hi)`` per slice of ``spec``'s granularity, widened to contain 0."""
    check_shape(x.shape, spec)
    x = x.detach()
    if x.dtype != torch.float32:
        x = x.to(torch.float32)
    if spec.granularity == "per-tensor" or x.ndim == 0:
        lo, hi = _amin_amax(x.reshape(1, -1))
    elif spec.granularity == "per-channel":
        lo, hi = _amin_amax(x.movedim(spec.axis, 0).reshape(x.shape[spec.axis], -1))
    else:
        # Zero padding of the ragged group cannot change a range that contains 0.
        lo, hi = _amin_amax(to_groups(x, spec.group_size))
    return torch.clamp(lo, max=0.0), torch.clamp(hi, min=0.0)


def qparams_from_range(lo: torch.Tensor, hi: torch.Tensor, spec: QuantSpec) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``(scale float32, zero_point int8 or None)`` for ranges that contain 0.

    Symmetric: ``scale = max(-lo, hi) / qmax``, no zero point.  Asymmetric:
    ``scale = (hi - lo) / (qmax - qmin)``, ``zp = clamp(qmin - round(lo / scale))``.
    Scales are floored at float32 eps.
    """
    lo = torch.clamp(lo.to(torch.float32), max=0.0)
    hi = torch.clamp(hi.to(torch.float32), min=0.0)
    if spec.symmetric:
        scale = torch.clamp(torch.maximum(-lo, hi) / float(spec.qmax), min=SCALE_EPS)
        return scale, None
    scale = torch.clamp((hi - lo) / float(spec.qmax - spec.qmin), min=SCALE_EPS)
    zero_point = torch.clamp(spec.qmin - torch.round(lo / scale), spec.qmin, spec.qmax)
    return scale, zero_point.to(torch.int8)


def choose_qparams(x: torch.Tensor, spec: QuantSpec) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Min/max scale and zero point of ``x``; shapes ``[1]``, ``[C]`` or ``[out, groups]``."""
    return qparams_from_range(*min_max(x, spec), spec)
