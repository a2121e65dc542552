"""Activation observers: min/max, moving-average min/max, percentile, histogram.

``make_observer(config)`` picks one by ``config.observer``.  Every observer
keeps its statistics as tensors on the input's device, computes in float32
(half and bfloat16 inputs are widened) and never syncs with the host in
``update``.
"""

from __future__ import annotations

import math

import torch

from ..config import QuantConfig
from ..errors import CalibrationError
from .base import Observer, as_float32, not_observed
from .histogram import HistogramObserver

__all__ = [
    "HistogramObserver",
    "MinMaxObserver",
    "MovingAverageObserver",
    "Observer",
    "PercentileObserver",
    "make_observer",
]


class MinMaxObserver(Observer):
    """The running minimum and maximum over every batch."""

    kind = "minmax"

    def __init__(self) -> None:
        self.lo: torch.Tensor | None = None
        self.hi: torch.Tensor | None = None

    @property
    def observed(self) -> bool:
        return self.lo is not None

    def update(self, x: torch.Tensor) -> None:
        if x.numel() == 0:
            return
        # min and max are exact in any float dtype, so widen only the two results.
        # (amin + amax: on CPU torch.aminmax is about twice as slow.)
        x = x.detach()
        lo, hi = torch.amin(x).to(torch.float32), torch.amax(x).to(torch.float32)
        if self.lo is None or self.hi is None:
            self.lo, self.hi = lo, hi
        else:
            self.lo, self.hi = self._merge(self.lo, self.hi, lo, hi)

    def _merge(
        self, old_lo: torch.Tensor, old_hi: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The range ``(old_lo, old_hi)`` after a batch with range ``(lo, hi)``: the running min and max."""
        return torch.minimum(old_lo, lo), torch.maximum(old_hi, hi)

    def min_max(self, qmin: int = -128, qmax: int = 127) -> tuple[torch.Tensor, torch.Tensor]:
        if self.lo is None or self.hi is None:
            raise not_observed(self.kind)
        return self.lo, self.hi


class MovingAverageObserver(MinMaxObserver):
    """Exponential moving average of each batch's min and max; the first batch initialises.

    ``lo ← lo + c·(batch_min − lo)`` (the same recurrence as PyTorch's
    MovingAverageMinMaxObserver), with ``c = config.moving_average_constant``.
    """

    kind = "moving-average"

    def __init__(self, constant: float = 0.01) -> None:
        super().__init__()
        self.constant = float(constant)

    def _merge(
        self, old_lo: torch.Tensor, old_hi: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return old_lo + self.constant * (lo - old_lo), old_hi + self.constant * (hi - old_hi)


def batch_percentiles(flat: torch.Tensor, p: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``100 − p`` and ``p`` percentiles of a 1-D float32 tensor, as numpy.percentile computes them.

    Linear interpolation between the two neighbouring order statistics, found
    with ``topk`` over the tail only: exact, no 16M-element limit (unlike
    ``torch.quantile``), and cheap for the usual p near 100.
    """
    n = flat.numel()
    pos = (n - 1) * (p / 100.0)
    f = math.floor(pos)
    frac = pos - f
    k = n - f  # the k largest values reach down to ascending rank f
    top = torch.topk(flat, k, largest=True, sorted=True).values  # top[j] is rank n-1-j
    hi = top[k - 1] + frac * (top[max(k - 2, 0)] - top[k - 1])
    pos = (n - 1) * (1.0 - p / 100.0)
    f = math.floor(pos)
    frac = pos - f
    bottom = torch.topk(flat, min(f + 2, n), largest=False, sorted=True).values
    lo = bottom[f] + frac * (bottom[min(f + 1, n - 1)] - bottom[f])
    return lo, hi


class PercentileObserver(Observer):
    """Per-batch ``p`` and ``100 − p`` percentiles, averaged over batches weighted by element count.

    Averaging (rather than taking the max over batches) keeps the estimate at
    the p-th percentile however many batches are seen; a running max would
    drift towards the min/max range as outliers accumulate.  For batches drawn
    from one distribution the average is close to the percentile of all values
    together.
    """

    kind = "percentile"

    def __init__(self, percentile: float = 99.99) -> None:
        self.percentile = float(percentile)
        self._lo_sum: torch.Tensor | None = None
        self._hi_sum: torch.Tensor | None = None
        self._count = 0

    @property
    def observed(self) -> bool:
        return self._count > 0

    def update(self, x: torch.Tensor) -> None:
        n = x.numel()
        if n == 0:
            return
        lo, hi = batch_percentiles(as_float32(x).reshape(-1), self.percentile)
        lo, hi = lo.to(torch.float64) * n, hi.to(torch.float64) * n
        if self._lo_sum is None or self._hi_sum is None:
            self._lo_sum, self._hi_sum = lo, hi
        else:
            self._lo_sum, self._hi_sum = self._lo_sum + lo, self._hi_sum + hi
        self._count += n

    def min_max(self, qmin: int = -128, qmax: int = 127) -> tuple[torch.Tensor, torch.Tensor]:
        if not self._count or self._lo_sum is None or self._hi_sum is None:
            raise not_observed(self.kind)
        return ((self._lo_sum / self._count).to(torch.float32), (self._hi_sum / self._count).to(torch.float32))


def make_observer(config: QuantConfig) -> Observer:
    """A fresh observer of the kind ``config.observer`` names, with the config's knobs."""
    kind = config.observer
    if kind == "minmax":
        return MinMaxObserver()
    if kind == "moving-average":
        return MovingAverageObserver(config.moving_average_constant)
    if kind == "percentile":
        return PercentileObserver(config.percentile)
    if kind == "histogram":
        return HistogramObserver(int(config.histogram_bins), config.histogram_method)
    raise CalibrationError(f"observer: {kind!r} is not an observer")
