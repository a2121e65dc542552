"""Clipping-range search over a histogram: least quantization MSE, or least KL divergence.

Candidate ranges ``[a, b]`` run from histogram edge to histogram edge (then
widened to contain 0).  A coarse grid over every (lower edge, upper edge) pair
is refined around its best point, 8x finer each round, down to single bins;
all in tensor arithmetic on the histogram's device, without a host sync.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

Cost = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
# Probability mass given to an empty edge bin of Q, spread over the in-range bins.
_SMOOTH = 1e-4


class _Histogram:
    """Counts, bin centres, the occupied bins ``[start, stop)``, and prefix sums of n, n·c, n·c²."""

    def __init__(self, counts: torch.Tensor, lo: torch.Tensor, width: torch.Tensor):
        self.counts, self.lo, self.width = counts, lo, width
        self.bins = counts.numel()
        positions = torch.arange(self.bins, device=counts.device)
        self.centers = lo + (positions.to(counts.dtype) + 0.5) * width
        self.start = torch.where(counts > 0, positions, self.bins).min()
        self.stop = torch.where(counts > 0, positions, -1).max() + 1
        zero = counts.new_zeros(1)  # prefix sums start with 0: s[j] sums bins [0, j)
        self.s0 = torch.cat([zero, counts.cumsum(0)])
        self.s1 = torch.cat([zero, (counts * self.centers).cumsum(0)])
        self.s2 = torch.cat([zero, (counts * self.centers.square()).cumsum(0)])

    def edges(self, index: torch.Tensor) -> torch.Tensor:
        return self.lo + index.to(self.counts.dtype) * self.width

    def inside(self, a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``[first, stop)``: the bins whose centres lie in ``[a, b]``."""
        # Clamped after the integer cast, so even a NaN range gives valid indices.
        first = torch.ceil((a - self.lo) / self.width - 0.5).to(torch.int64).clamp(0, self.bins)
        stop = (torch.floor((b - self.lo) / self.width - 0.5) + 1).to(torch.int64).clamp(0, self.bins)
        return first, torch.maximum(stop, first)


def _mse_cost(h: _Histogram, levels: int) -> Cost:
    def cost(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        first, stop = h.inside(a, b)
        n_in = h.s0[stop] - h.s0[first]
        # Σ n (a − c)² below the range and Σ n (c − b)² above it, from the prefix sums.
        below = a.square() * h.s0[first] - 2 * a * h.s1[first] + h.s2[first]
        s0, s1, s2 = h.s0[-1] - h.s0[stop], h.s1[-1] - h.s1[stop], h.s2[-1] - h.s2[stop]
        above = s2 - 2 * b * s1 + b.square() * s0
        step = (b - a) / levels
        # Rounding error of values spread evenly within a step: step² / 12 each.
        return n_in * step.square() / 12.0 + below.clamp(min=0) + above.clamp(min=0)

    return cost


def _xlogy(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``x·log(y)`` with ``0·log(anything) = 0``."""
    return torch.where(x > 0, x * torch.log(torch.where(x > 0, y, 1.0)), 0.0)


def _kl_cost(h: _Histogram, levels: int) -> Cost:
    """TensorRT-style entropy calibration, generalised to asymmetric ranges.

    P: the in-range bins, with the clipped counts folded into the two edge
    bins.  Q: the in-range bins *without* the folded counts, merged per
    quantization level and spread evenly over that level's non-empty bins.
    KL(P‖Q) is summed level by level from prefix sums of n, [n > 0] and
    n·log n, so a candidate costs O(levels), not O(bins).  Ranges narrower
    than ``levels + 1`` bins (or than the occupied bins, when fewer), where Q
    would copy P bin for bin, are not allowed.
    """
    zero = h.counts.new_zeros(1)
    nonzero = torch.cat([zero, (h.counts > 0).to(h.counts.dtype).cumsum(0)])
    nlogn = torch.cat([zero, _xlogy(h.counts, h.counts).cumsum(0)])
    total = h.s0[-1]
    steps = torch.arange(levels + 2, dtype=h.counts.dtype, device=h.counts.device) - 0.5
    min_bins = torch.clamp(h.stop - h.start, max=levels + 1)

    def cost(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        first, stop = h.inside(a, b)
        step = ((b - a) / levels).clamp(min=torch.finfo(h.counts.dtype).tiny)
        # Level L holds the bins whose centres round to a + L·step: [bounds[L], bounds[L+1]).
        cut = a[:, None] + steps * step[:, None]
        bounds = torch.ceil((cut - h.lo) / h.width - 0.5).to(torch.int64).clamp(0, h.bins)
        bounds = torch.minimum(torch.maximum(bounds, first[:, None]), stop[:, None])
        s = h.s0[bounds].diff(dim=1)
        f = nonzero[bounds].diff(dim=1)
        g = nlogn[bounds].diff(dim=1)
        inside = h.s0[stop] - h.s0[first]
        # Σ over non-empty in-range bins of n·log(n / mean count of its level), plus normalisation.
        kl = (g.sum(1) - _xlogy(s, s / f.clamp(min=1)).sum(1) + _xlogy(inside, inside / total)) / total
        for edge, folded in ((first, h.s0[first]), ((stop - 1).clamp(min=0), total - h.s0[stop])):
            n = h.counts[edge.clamp(max=h.bins - 1)]
            level = torch.round((h.centers[edge.clamp(max=h.bins - 1)] - a) / step)
            level = level.to(torch.int64).clamp(0, levels)[:, None]
            q = s.gather(1, level)[:, 0] / f.gather(1, level)[:, 0].clamp(min=1) / inside.clamp(min=1)
            # An empty edge bin has Q = 0; smooth it (as TensorRT smooths Q) so folding
            # counts into it costs much but not infinitely, and the search can still move.
            q = torch.where(n > 0, q, _SMOOTH / (stop - first).clamp(min=1))
            p_old, p_new = n / total, (n + folded) / total
            kl = kl - _xlogy(p_old, p_old / q) + _xlogy(p_new, p_new / q)
        bad = ((stop - first) < min_bins) | (inside <= 0) | ~torch.isfinite(kl)
        return torch.where(bad, torch.inf, kl)

    return cost


def _evaluate(cost: Cost, a: torch.Tensor, b: torch.Tensor, chunk: int) -> torch.Tensor:
    return torch.cat([cost(a[i : i + chunk], b[i : i + chunk]) for i in range(0, len(a), chunk)])


def _pick(values: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    # index_select, not values[index]: a 0-dim tensor index would sync with the host.
    return values.index_select(0, index.view(1)).squeeze(0)


def _grid_search(h: _Histogram, cost: Cost, coarse: int, chunk: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Best ``(a, b)``: a coarse grid of edge pairs, then finer grids around the best pair.

    Edges run only over the occupied bins: an edge beyond the data wastes
    levels on nothing, which MSE would never pick and KL cannot see.
    """
    device, start, stop = h.counts.device, h.start, h.stop
    stride = max(1, math.ceil(h.bins / coarse))  # the widest the coarse spacing can be
    spacing = torch.div(stop - start + coarse - 1, coarse, rounding_mode="floor")
    grid = torch.minimum(start + torch.arange(coarse + 1, device=device) * spacing, stop)
    lower, upper = grid, grid
    while True:
        ia, ib = torch.meshgrid(lower, upper, indexing="ij")
        ia, ib = ia.reshape(-1), ib.reshape(-1)
        a = torch.clamp(h.edges(ia), max=0.0)
        b = torch.clamp(h.edges(ib), min=0.0)
        costs = _evaluate(cost, a, b, chunk)
        best = torch.argmin(costs)  # the first minimum: ties break deterministically
        if stride == 1:
            # Every candidate ruled out (only possible for KL): keep the whole occupied range.
            ruled_out = torch.isinf(_pick(costs, best))
            whole = (torch.clamp(h.edges(start), max=0.0), torch.clamp(h.edges(stop), min=0.0))
            return (torch.where(ruled_out, whole[0], _pick(a, best)), torch.where(ruled_out, whole[1], _pick(b, best)))
        finer = max(1, stride // 8)
        offsets = torch.arange(-stride, stride + 1, finer, device=device)
        lower = torch.minimum(torch.maximum(_pick(ia, best) + offsets, start), stop)
        upper = torch.minimum(torch.maximum(_pick(ib, best) + offsets, start), stop)
        stride = finer


def mse_range(
    counts: torch.Tensor, lo: torch.Tensor, width: torch.Tensor, levels: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """The range ``(a, b)`` (a ≤ 0 ≤ b) whose ``levels``-step grid has the least estimated MSE."""
    h = _Histogram(counts, lo, width)
    return _grid_search(h, _mse_cost(h, levels), coarse=128, chunk=1 << 16)


def kl_range(
    counts: torch.Tensor, lo: torch.Tensor, width: torch.Tensor, levels: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """The range ``(a, b)`` (a ≤ 0 ≤ b) with the least KL divergence of quantized from clipped histogram."""
    h = _Histogram(counts, lo, width)
    return _grid_search(h, _kl_cost(h, levels), coarse=32, chunk=4096)
