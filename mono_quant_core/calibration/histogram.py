"""Histogram observer: a fixed number of bins over a range that grows as batches arrive.

When a batch falls outside the range, the span grows by a whole factor
``k`` and the left edge moves by whole old bins, so every old bin lands inside
exactly one new bin: re-binning moves counts without splitting them (no
smearing however often it happens).  The span at least doubles each time and
the spare room is split between both ends, so it happens rarely.  Growing is
tensor arithmetic that is the identity when nothing grows: no host sync, no
Python branch on values.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .base import Observer, as_float32, not_observed
from .range_search import kl_range, mse_range

# Smallest bin width: keeps an all-zero first batch from dividing by zero.
_MIN_WIDTH = 1e-20
# Relative slack when deciding whether the range must grow, against float64 rounding.
_SLACK = 1e-9


def bincount_into(counts: torch.Tensor, position: torch.Tensor) -> None:
    """Add one to ``counts[int(p)]`` for every fractional bin position ``p`` (clamped to the bins).

    On CPU, int32 + bincount is about 1.7x faster than int64 + scatter_add_.
    """
    index = position.to(torch.int32).clamp_(0, counts.numel() - 1)
    counts += torch.bincount(index, minlength=counts.numel())


def scatter_into(counts: torch.Tensor, position: torch.Tensor) -> None:
    """The same as :func:`bincount_into` for accelerators, where bincount syncs to size its output."""
    index = position.to(torch.int64).clamp_(0, counts.numel() - 1)
    ones = torch.ones((), dtype=counts.dtype, device=counts.device).expand(index.numel())
    counts.scatter_add_(0, index, ones)


@dataclass
class _Bins:
    """The histogram once a batch was seen."""

    counts: torch.Tensor  # float64 [bins], exact integers
    lo: torch.Tensor  # float64 0-dim: left edge of bin 0
    width: torch.Tensor  # float64 0-dim: bin width
    positions: torch.Tensor  # float64 arange(bins), cached


class HistogramObserver(Observer):
    """Counts activations in ``bins`` bins; the range is chosen at the end by MSE or entropy (KL)."""

    kind = "histogram"

    def __init__(self, bins: int = 2048, method: str = "mse") -> None:
        self.bins = int(bins)
        self.method = method
        self._bins: _Bins | None = None

    @property
    def observed(self) -> bool:
        return self._bins is not None

    @property
    def counts(self) -> torch.Tensor | None:
        """float64 [bins], exact integers; None before the first batch."""
        return None if self._bins is None else self._bins.counts

    @property
    def lo(self) -> torch.Tensor | None:
        """float64 0-dim: the left edge of bin 0; None before the first batch."""
        return None if self._bins is None else self._bins.lo

    @property
    def width(self) -> torch.Tensor | None:
        """float64 0-dim: the bin width; None before the first batch."""
        return None if self._bins is None else self._bins.width

    def update(self, x: torch.Tensor) -> None:
        if x.numel() == 0:
            return
        flat = as_float32(x).reshape(-1)
        # The range always contains 0, as the quantization grid will.
        bounds = torch.stack(torch.aminmax(flat)).to(torch.float64)
        bounds = torch.stack([bounds[0].clamp(max=0.0), bounds[1].clamp(min=0.0)])
        h = self._bins
        if h is None:
            h = self._bins = _Bins(
                counts=torch.zeros(self.bins, dtype=torch.float64, device=flat.device),
                lo=bounds[0],
                width=torch.clamp((bounds[1] - bounds[0]) / self.bins, min=_MIN_WIDTH),
                positions=torch.arange(self.bins, dtype=torch.float64, device=flat.device),
            )
        else:
            self._grow(h, bounds)
        # One fused pass to fractional bin positions (0-dim float64 operands keep it
        # float32), then truncate and clamp as integers: a NaN turns into some
        # integer that the clamp puts in range (NaN ranges fail later, in the runner).
        inv = 1.0 / h.width
        position = torch.addcmul(-h.lo * inv, flat, inv)
        count = bincount_into if flat.device.type == "cpu" else scatter_into
        count(h.counts, position)

    def _grow(self, h: _Bins, bounds: torch.Tensor) -> None:
        """Widen the range of ``h`` to cover ``bounds = [min, max]``; the identity when it already does."""
        # In units of old bins the old range is [0, bins]; the batch needs [low, high].
        units = (bounds - h.lo) / h.width
        low, high = units[0].clamp(max=0.0), units[1].clamp(min=float(self.bins))
        factor = torch.clamp(torch.ceil((high - low) / self.bins - _SLACK), min=1.0)
        # Shift the left edge left by whole old bins, splitting the spare room evenly
        # between both ends so a small overshoot on either side does not grow it again.
        spare = factor * self.bins - (high - low)
        shift = torch.floor(spare / 2 - low)
        shift = torch.minimum(shift, torch.floor(factor * self.bins - high + _SLACK))
        shift = torch.maximum(shift, torch.ceil(-low - _SLACK)).clamp(min=0.0)
        target = torch.floor((h.positions + shift) / factor).to(torch.int64).clamp_(0, self.bins - 1)
        h.counts = torch.zeros_like(h.counts).scatter_add_(0, target, h.counts)
        h.lo = h.lo - shift * h.width
        h.width = h.width * factor

    def min_max(self, qmin: int = -128, qmax: int = 127) -> tuple[torch.Tensor, torch.Tensor]:
        """The clipping range with the least estimated quantization error (MSE or KL)."""
        h = self._bins
        if h is None:
            raise not_observed(self.kind)
        search = kl_range if self.method == "entropy" else mse_range
        lo, hi = search(h.counts, h.lo, h.width, qmax - qmin)
        return lo.to(torch.float32), hi.to(torch.float32)
