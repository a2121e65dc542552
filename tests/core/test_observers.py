"""Observer maths against reference computations; no host sync; degenerate and half inputs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mono_quant_core import CalibrationError, QuantConfig
from mono_quant_core.calibration import affine_qparams, make_observer, range_search
from mono_quant_core.calibration.histogram import HistogramObserver, bincount_into, scatter_into
from mono_quant_core.calibration.observers import MinMaxObserver, MovingAverageObserver, PercentileObserver

OBSERVERS = ["minmax", "moving-average", "percentile", "histogram"]
EPS = torch.finfo(torch.float32).eps


def observe(kind: str, batches, **knobs):
    observer = make_observer(QuantConfig(observer=kind, **knobs))
    for x in batches:
        observer.update(x)
    return observer


def config_for(kind: str) -> QuantConfig:
    """Static config for an observer; ``entropy`` is the histogram observer with the KL search."""
    if kind == "entropy":
        return QuantConfig(mode="static", observer="histogram", histogram_method="entropy")
    return QuantConfig(mode="static", observer=kind)


def quant_mse(scale, zero_point, x) -> float:
    """Mean squared error of quantize → dequantize on the int8 grid the qparams define."""
    q = torch.clamp(torch.round(x / scale) + zero_point, -128, 127)
    return float(((q - zero_point) * scale - x).square().mean())


def gaussian_with_spikes(seed: int = 0):
    """8 batches of N(0, 1) with two isolated spikes of 60 in 131,072 values: rare outliers."""
    g = torch.Generator().manual_seed(seed)
    batches = [torch.randn(64, 256, generator=g) for _ in range(8)]
    batches[2][5, 7] = 60.0
    batches[6][9, 1] = 58.0
    return batches


def test_make_observer_picks_kind_and_knobs():
    assert type(make_observer(QuantConfig(observer="minmax"))) is MinMaxObserver
    ma = make_observer(QuantConfig(observer="moving-average", moving_average_constant=0.25))
    assert type(ma) is MovingAverageObserver and ma.constant == 0.25
    pc = make_observer(QuantConfig(observer="percentile", percentile=99.5))
    assert type(pc) is PercentileObserver and pc.percentile == 99.5
    hist = make_observer(QuantConfig(observer="histogram", histogram_bins=512, histogram_method="entropy"))
    assert type(hist) is HistogramObserver and (hist.bins, hist.method) == (512, "entropy")


def test_affine_qparams_reference_values():
    scale, zp = affine_qparams(torch.tensor(-1.0), torch.tensor(3.0))
    assert scale.dtype == torch.float32 and zp.dtype == torch.int32
    assert float(scale) == pytest.approx(4.0 / 255, rel=1e-7)
    assert int(zp) == -64  # -128 - round(-1 / (4/255)) = -128 + round(63.75)
    # A range that excludes 0 is widened to contain it.
    scale, zp = affine_qparams(torch.tensor(2.0), torch.tensor(5.0))
    assert float(scale) == pytest.approx(5.0 / 255, rel=1e-7) and int(zp) == -128
    scale, zp = affine_qparams(torch.tensor(-6.0), torch.tensor(-2.0))
    assert float(scale) == pytest.approx(6.0 / 255, rel=1e-7) and int(zp) == 127
    with pytest.raises(ValueError, match=r"only \[-128, 127\]"):
        affine_qparams(torch.tensor(-1.0), torch.tensor(1.0), qmin=0, qmax=255)


def test_minmax_equals_aminmax_over_all_batches():
    g = torch.Generator().manual_seed(0)
    batches = [torch.randn(4, 7, generator=g) * (i + 1) + i for i in range(5)] + [torch.randn(3, generator=g)]
    lo, hi = observe("minmax", batches).min_max()
    ref = torch.aminmax(torch.cat([b.reshape(-1) for b in batches]))
    assert torch.equal(lo, ref.min) and torch.equal(hi, ref.max)


def test_moving_average_follows_the_recurrence():
    g = torch.Generator().manual_seed(1)
    batches = [torch.randn(32, generator=g) * (1 + i) for i in range(6)]
    c = 0.3
    lo, hi = observe("moving-average", batches, moving_average_constant=c).min_max()
    ref_lo, ref_hi = float(batches[0].min()), float(batches[0].max())  # first batch initialises
    for x in batches[1:]:
        ref_lo += c * (float(x.min()) - ref_lo)
        ref_hi += c * (float(x.max()) - ref_hi)
    # float32 state against a float64 recurrence: 1e-6 relative.
    assert float(lo) == pytest.approx(ref_lo, rel=1e-6) and float(hi) == pytest.approx(ref_hi, rel=1e-6)


@pytest.mark.parametrize("p", [99.99, 99.0, 90.0, 100.0])
def test_percentile_of_one_batch_equals_numpy(p):
    x = torch.randn(3001, generator=torch.Generator().manual_seed(2)) ** 3
    lo, hi = observe("percentile", [x], percentile=p).min_max()
    ref_lo, ref_hi = np.percentile(x.double().numpy(), [100 - p, p])
    assert float(lo) == pytest.approx(ref_lo, rel=1e-6, abs=1e-6)
    assert float(hi) == pytest.approx(ref_hi, rel=1e-6, abs=1e-6)


def test_percentile_over_batches_is_the_count_weighted_mean_and_near_the_global_value():
    g = torch.Generator().manual_seed(3)
    batches = [torch.randn(n, generator=g) for n in (20000, 20000, 10000, 30000)]
    lo, hi = observe("percentile", batches, percentile=99.9).min_max()
    per_batch = np.array([np.percentile(b.double().numpy(), [0.1, 99.9]) for b in batches])
    weights = np.array([b.numel() for b in batches], dtype=np.float64)
    ref = (per_batch * weights[:, None]).sum(0) / weights.sum()
    assert float(lo) == pytest.approx(ref[0], rel=1e-6) and float(hi) == pytest.approx(ref[1], rel=1e-6)
    # Batches from one distribution: within 3% of the percentile of all 80,000 values.
    glob = np.percentile(torch.cat(batches).double().numpy(), [0.1, 99.9])
    assert float(lo) == pytest.approx(glob[0], rel=0.03) and float(hi) == pytest.approx(glob[1], rel=0.03)


def test_percentile_has_no_16m_element_limit():
    n = (1 << 24) + 3  # torch.quantile refuses inputs above 2**24 elements
    x = torch.randn(n, generator=torch.Generator().manual_seed(4))
    lo, hi = observe("percentile", [x], percentile=99.999).min_max()
    ref_lo, ref_hi = np.percentile(x.numpy(), [0.001, 99.999])
    assert float(lo) == pytest.approx(ref_lo, rel=1e-5) and float(hi) == pytest.approx(ref_hi, rel=1e-5)


def test_histogram_mse_range_beats_minmax_with_rare_outliers():
    batches = gaussian_with_spikes()
    data = torch.cat([b.reshape(-1) for b in batches])
    minmax_mse = quant_mse(*observe("minmax", batches).qparams(), data)
    hist = observe("histogram", batches)
    lo, hi = hist.min_max()
    hist_mse = quant_mse(*hist.qparams(), data)
    assert hist_mse < 0.9 * minmax_mse, (hist_mse, minmax_mse)
    assert -5.0 < float(lo) < 0 < float(hi) < 60.0  # clipped, but inside the data


def test_histogram_range_is_close_to_minmax_on_uniform_data():
    g = torch.Generator().manual_seed(5)
    batches = [torch.rand(4096, generator=g) * 4 - 1 for _ in range(6)]  # U(-1, 3)
    ref = torch.aminmax(torch.cat(batches))
    for method in ("mse", "entropy"):
        lo, hi = observe("histogram", batches, histogram_method=method).min_max()
        # Within 1% of the span (4.0) at each end.
        assert abs(float(lo) - float(ref.min)) < 0.04 and abs(float(hi) - float(ref.max)) < 0.04, method


def test_entropy_range_clips_a_heavy_tail_and_lowers_mse():
    g = torch.Generator().manual_seed(6)
    # Laplace(0, 1) by inverse CDF: a heavy tail whose few extreme values stretch min/max.
    batches = []
    for _ in range(8):
        u = torch.rand(64, 256, generator=g) - 0.5
        batches.append(-torch.sign(u) * torch.log1p(-2 * u.abs()))
    data = torch.cat([b.reshape(-1) for b in batches])
    minmax = observe("minmax", batches)
    mm_lo, mm_hi = (float(v) for v in minmax.min_max())
    kl = observe("histogram", batches, histogram_method="entropy")
    lo, hi = (float(v) for v in kl.min_max())
    bin_width = float(kl.width)
    assert mm_lo - bin_width <= lo < 0 < hi <= mm_hi + bin_width  # never wider than the data
    assert lo > 0.9 * mm_lo or hi < 0.9 * mm_hi  # the tail is clipped by more than 10%
    assert quant_mse(*kl.qparams(), data) < quant_mse(*minmax.qparams(), data)


def test_mse_search_finds_the_brute_force_optimum():
    counts = torch.distributions.StudentT(2.0).sample((256,)).abs().mul(50).round().double()
    counts[::7] = 0.0
    lo, width = torch.tensor(-3.1, dtype=torch.float64), torch.tensor(0.05, dtype=torch.float64)
    h = range_search._Histogram(counts, lo, width)
    cost = range_search._mse_cost(h, 255)
    a, b = range_search.mse_range(counts, lo, width, 255)
    edges = h.edges(torch.arange(257))
    ga, gb = torch.meshgrid(edges.clamp(max=0), edges.clamp(min=0), indexing="ij")
    brute = cost(ga.reshape(-1), gb.reshape(-1)).min()
    assert float(cost(a.view(1), b.view(1))[0]) <= float(brute) * (1 + 1e-9)


def kl_direct(h, a: float, b: float, levels: int = 255) -> float:
    """KL(P‖Q) bin by bin, the plain O(bins) way, as a reference for the prefix-sum version.

    P folds the clipped counts into the edge bins; Q merges the unfolded in-range
    bins per quantization level and spreads each level over its non-empty bins.
    """
    n = h.counts.numpy()
    centers = h.centers.numpy()
    first = min(max(int(np.ceil((a - float(h.lo)) / float(h.width) - 0.5)), 0), n.size)
    stop = min(max(int(np.floor((b - float(h.lo)) / float(h.width) - 0.5)) + 1, 0), n.size)
    p = np.zeros_like(n)
    p[first:stop] = n[first:stop]
    p[first] += n[:first].sum()
    p[stop - 1] += n[stop:].sum()
    step = (b - a) / levels
    level = np.clip(np.round((centers - a) / step), 0, levels).astype(int)
    unfolded = np.zeros_like(n)
    unfolded[first:stop] = n[first:stop]
    sums = np.bincount(level, weights=unfolded, minlength=levels + 1)
    filled = np.bincount(level, weights=(unfolded > 0).astype(float), minlength=levels + 1)
    q = np.where(unfolded > 0, sums[level] / np.maximum(filled[level], 1), 0.0)
    p, q = p / p.sum(), q / q.sum()
    for edge in (first, stop - 1):  # an empty edge bin gets the smoothing mass, 1e-4 spread
        if n[edge] == 0:
            q[edge] = 1e-4 / (stop - first)
    mask = p > 0
    return float((p[mask] * np.log(p[mask] / q[mask])).sum())


def test_kl_cost_equals_the_direct_computation():
    hist = observe("histogram", [torch.randn(64, 256, generator=torch.Generator().manual_seed(7))])
    h = range_search._Histogram(hist.counts, hist.lo, hist.width)
    cost = range_search._kl_cost(h, 255)
    for a, b in [(-2.0, 2.0), (-3.0, 3.5), (-1.7, 2.9), (-3.9, 3.9), (-3.4, 3.3)]:
        got = float(cost(torch.tensor([a], dtype=torch.float64), torch.tensor([b], dtype=torch.float64))[0])
        want = kl_direct(h, a, b)
        assert got == pytest.approx(want, rel=1e-7, abs=1e-12), (a, b)  # prefix-sum rounding


def test_histogram_growth_moves_counts_without_smearing():
    g = torch.Generator().manual_seed(8)
    batches = [torch.randn(2000, generator=g) * s for s in (0.5, 1.0, 0.7, 3.0, 2.0, 9.0)]
    hist = observe("histogram", batches, histogram_bins=256)
    data = torch.cat(batches).double().numpy()
    edges = (hist.lo + hist.width * torch.arange(257, dtype=torch.float64)).numpy()
    ref, _ = np.histogram(data, bins=edges)
    assert float(hist.counts.sum()) == data.size
    assert edges[0] <= data.min() and edges[-1] >= data.max()
    # Each old bin lies inside one new bin, so the counts equal a histogram of all the data
    # on the final edges (up to values within float rounding of an edge).
    assert np.abs(hist.counts.numpy() - ref).sum() <= 4


def test_cpu_and_accelerator_counting_paths_agree():
    position = torch.rand(10000, generator=torch.Generator().manual_seed(10)) * 70 - 3
    position[7] = float("nan")  # lands in some bin, never out of range
    by_bincount, by_scatter = torch.zeros(64, dtype=torch.float64), torch.zeros(64, dtype=torch.float64)
    bincount_into(by_bincount, position)
    scatter_into(by_scatter, position)
    assert torch.equal(by_bincount, by_scatter) and float(by_bincount.sum()) == 10000
    finite = position[~position.isnan()]
    ref = torch.tensor(np.bincount(np.clip(np.floor(finite.numpy()), 0, 63).astype(int), minlength=64))
    extra = by_bincount - ref  # the finite values exactly where numpy puts them, the NaN in one bin
    assert float(extra.min()) == 0 and float(extra.sum()) == 1


@pytest.mark.parametrize("kind", OBSERVERS)
@pytest.mark.parametrize("value", [0.0, 3.5, -2.0])
def test_constant_inputs_give_finite_qparams(kind, value):
    observer = observe(kind, [torch.full((5, 5), value)] * 3)
    scale, zp = observer.qparams()
    assert torch.isfinite(scale) and float(scale) >= EPS and -128 <= int(zp) <= 127
    q = torch.clamp(torch.round(torch.tensor(value) / scale) + zp, -128, 127)
    # 0 is exact on the grid; other constants land within one step (histogram: one bin).
    assert abs(float((q - zp) * scale) - value) <= max(float(scale), abs(value) / 64)
    if value == 0.0:
        assert float(scale) == EPS and int(zp) == -128


@pytest.mark.parametrize("kind", OBSERVERS)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_inputs_match_float32_of_the_same_values(kind, dtype):
    g = torch.Generator().manual_seed(9)
    batches = [(torch.randn(16, 33, generator=g) * 3).to(dtype) for _ in range(4)]
    half = observe(kind, batches)
    full = observe(kind, [b.float() for b in batches])
    for got, want in zip(half.qparams() + half.min_max(), full.qparams() + full.min_max(), strict=True):
        assert got.dtype == want.dtype and torch.equal(got, want)
    assert half.min_max()[0].dtype == torch.float32


@pytest.mark.parametrize("kind", [*OBSERVERS, "entropy"])
def test_observers_never_sync_with_the_host(kind):
    # Meta tensors have no data: .item(), bool() or indexing by a tensor value raise,
    # so update and qparams running here proves neither syncs nor branches on values.
    observer = make_observer(config_for(kind))
    for dtype in (torch.float32, torch.bfloat16, torch.float32):
        observer.update(torch.empty(8, 300, device="meta", dtype=dtype))
    scale, zp = observer.qparams()
    assert scale.device.type == "meta" and zp.dtype == torch.int32


@pytest.mark.parametrize("kind", OBSERVERS)
def test_empty_batches_are_ignored_and_nothing_observed_is_an_error(kind):
    observer = make_observer(QuantConfig(observer=kind))
    observer.update(torch.empty(0, 4))
    assert not observer.observed
    with pytest.raises(CalibrationError, match=f"{kind} observer"):
        observer.qparams()
    observer.update(torch.tensor([-1.0, 2.0]))
    assert observer.observed and torch.isfinite(observer.qparams()[0])
