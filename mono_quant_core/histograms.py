"""Per-layer histograms: a layer's weight and input distributions, with its clipping range and grid.

:func:`layer_histograms` reads the float layer's weights and, from its quantized
twin, the range the quantized grid can represent and the grid's levels; with
samples, it runs the float model once over them and histograms the layer's
floating-point input (what static mode quantizes).  The result is plain
Python (lists, floats), so it can cross from a worker thread to a view.

Which weights: every weight matrix of the layer (``weight``; for LSTM / GRU
every ``weight_*`` of every layer and direction, histogrammed together), never
the bias.  Per-channel and per-group ranges are listed in scale order (per
group: row-major over ``[out, groups]``; LSTM / GRU: one weight after the
other); ``grid`` is then the grid of the widest of them, and any one
channel's grid is ``linspace(lo, hi, len(grid))`` of its range.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from .batches import call_model, sample_name
from .calibration.hooks import first_input
from .errors import ConfigError
from .loading.lazy_model import lazy_weights
from .modules.attention import float_projections
from .modules.base import QuantizedModule
from .progress import CancelLike, check_cancel
from .structure import model_device
from .tensor import ACT_QMAX, ACT_QMIN

#: Values histogrammed per ``torch.histc`` call: float32 bin counts stay exact below 2**24.
_CHUNK = 1 << 23
#: Input values held from the first pass over the samples (128 MiB); past this the samples run
#: twice (once for the range, once for the counts) instead of holding every input.
_KEEP_VALUES = 1 << 25


@dataclass(frozen=True)
class Histogram:
    """``counts[i]`` values fell in ``[edges[i], edges[i + 1]]`` (``len(edges) == len(counts) + 1``).

    ``clip``: the range the quantized values can take (None: not quantized, or
    a cast); ``grid``: the dequantized levels ``scale * (q - zero_point)``
    (None: no integer grid); ``channel_ranges``: per-channel (or per-group)
    ranges when there are several scales; ``clip_label``: what ``clip`` is, in
    a few words.
    """

    counts: list[int]
    edges: list[float]
    clip: tuple[float, float] | None = None
    grid: list[float] | None = None
    channel_ranges: list[tuple[float, float]] | None = None
    clip_label: str = ""

    @property
    def total(self) -> int:
        return sum(self.counts)


@dataclass(frozen=True)
class LayerHistograms:
    """The histograms of one layer.  ``dtype`` is ``"float"`` for a layer left in float;
    ``activations`` is None without samples (or when the layer's input is not floating point)."""

    name: str
    type: str
    dtype: str
    scheme: str | None
    granularity: str | None
    mode: str | None
    weights: Histogram
    activations: Histogram | None
    note: str = ""


def layer_histograms(
    float_model: nn.Module,
    quantized_model: nn.Module | None,
    name: str,
    samples: Sequence[Any] | None = None,
    *,
    bins: int = 128,
    max_samples: int = 16,
    cancel: CancelLike | None = None,
) -> LayerHistograms:
    """Histograms of layer ``name``: its float weights against ``quantized_model``'s range and grid,
    and (with ``samples``, batches as :func:`~mono_quant_core.quantize` takes them) its input on up to
    ``max_samples`` of them run through ``float_model``.  ``quantized_model`` None: weights alone."""
    if bins < 1:
        raise ConfigError(f"bins: {bins!r} must be a positive integer", key="bins")
    layer = _module(float_model, name, "float_model")
    twin = _module(quantized_model, name, "quantized_model") if quantized_model is not None else None
    q = twin if isinstance(twin, QuantizedModule) else None
    if q is None and isinstance(layer, QuantizedModule):  # a model opened from a mono-quant file
        q = layer
    lazy = lazy_weights(float_model)  # a model built without its weights: this layer's are read
    with lazy.onloaded(layer, name) if lazy is not None else contextlib.nullcontext():
        weights, notes = _weights_of(layer, q, quantized_model, name)
        weight_hist = _histogram(weights, bins, *_weight_grid(q, notes))
    del weights
    check_cancel(cancel)
    activations = None
    if samples is not None:
        activations = _input_histogram(float_model, layer, q, samples, bins, max_samples, cancel)
        if activations is None:
            notes.append("the samples bring no floating-point input to this layer")
    return LayerHistograms(
        name=name,
        type=type(layer.float_type if isinstance(layer, QuantizedModule) else layer).__name__,
        dtype=q.qdtype if q is not None else "float",
        scheme=None if q is None or q.spec is None else q.spec.scheme,
        granularity=None if q is None or q.spec is None else q.spec.granularity,
        mode=None if q is None else q.mode,
        weights=weight_hist,
        activations=activations,
        note="; ".join(notes),
    )


def _weights_of(
    layer: nn.Module, q: QuantizedModule | None, quantized_model: nn.Module | None, name: str
) -> tuple[list[torch.Tensor], list[str]]:
    """The weights to count and the notes so far."""
    if isinstance(layer, QuantizedModule):
        # A model opened from a mono-quant file: its float weights are gone.
        weights = [w.detach() for w in layer.dequantized_weights().values()]
    elif isinstance(layer, nn.MultiheadAttention):  # its projections' weights (in_proj_weight is one)
        weights = [w.detach() for w, _ in float_projections(layer).values()]
    else:
        weights = _float_weights(layer, list(q.weight_shapes) if q is not None else None)
    if not weights:
        raise ConfigError(f"{name}: the layer has no weight to histogram", key="layer")
    notes = []
    if isinstance(layer, QuantizedModule):
        notes.append("the float weights are not in the file: its dequantized weights are shown")
    if q is None and quantized_model is not None:
        notes.append("kept float: no clipping range or grid")
    return weights, notes


def _module(model: nn.Module, name: str, role: str) -> nn.Module:
    try:
        return model.get_submodule(name)
    except AttributeError:
        raise ConfigError(f"layer: {role} has no module named {name!r}", key="layer") from None


def _float_weights(layer: nn.Module, stems: list[str] | None) -> list[torch.Tensor]:
    """The weights the twin quantized (``stems``), else ``weight`` and every ``weight_*`` (RNNs)."""
    own = dict(layer.named_parameters(recurse=False))
    names = stems if stems is not None else [n for n in own if n == "weight" or n.startswith("weight_")]
    return [own[n].detach() for n in names if own.get(n) is not None]


# -- ranges and grids ---------------------------------------------------------------------------
Ranges = tuple[tuple[float, float] | None, list[float] | None, list[tuple[float, float]] | None, str]


def _weight_grid(q: QuantizedModule | None, notes: list[str]) -> Ranges:
    """``(clip, grid, channel_ranges, label)`` of the twin's weights."""
    if q is None:
        return None, None, None, ""
    spec = q.spec
    if spec is None:
        notes.append(f"{q.qdtype} cast: no clipping range or grid")
        return None, None, None, ""
    los, his, scales, zps = [], [], [], []
    for holder, stem in q.weight_holders():
        scale = getattr(holder, f"{stem}_scale").detach().to(torch.float64).reshape(-1)
        zp = getattr(holder, f"{stem}_zero_point", None)
        zp = torch.zeros_like(scale) if zp is None else zp.detach().to(torch.float64).reshape(-1)
        los.append(scale * (spec.qmin - zp))
        his.append(scale * (spec.qmax - zp))
        scales.append(scale)
        zps.append(zp)
    lo, hi, scale, zp = (torch.cat(t).cpu() for t in (los, his, scales, zps))
    widest = int(torch.argmax(hi - lo))
    levels = torch.arange(spec.qmin, spec.qmax + 1, dtype=torch.float64)
    grid = (scale[widest] * (levels - zp[widest])).tolist()
    clip = (float(lo.min()), float(hi.max()))
    if lo.numel() == 1:
        return clip, grid, None, f"{q.qdtype} range"
    notes.append(f"{spec.granularity}: {lo.numel()} ranges; their union is marked")
    ranges = list(zip(lo.tolist(), hi.tolist(), strict=True))
    return clip, grid, ranges, f"{q.qdtype} range"


def _input_range(q: QuantizedModule | None, seen: tuple[float, float]) -> Ranges:
    """``(clip, grid, None, label)`` of the twin's input quantization (``seen``: the inputs' min, max)."""
    if q is None:
        return None, None, None, ""
    if q.mode == "weight-only":
        return None, None, None, "not quantized (weight-only)"
    if q.mode == "dynamic":  # each batch by its own min/max (widened to 0): the widest seen is marked
        return (min(seen[0], 0.0), max(seen[1], 0.0)), None, None, "per batch (widest seen)"
    scale = float(q.input_scale.reshape(-1)[0])
    zp = float(q.input_zero_point.reshape(-1)[0])
    if not math.isfinite(scale):  # static, but calibration never reached this layer
        return None, None, None, "not calibrated"
    levels = torch.arange(ACT_QMIN, ACT_QMAX + 1, dtype=torch.float64)
    grid = (scale * (levels - zp)).tolist()
    return (scale * (ACT_QMIN - zp), scale * (ACT_QMAX - zp)), grid, None, "calibrated range"


# -- counting -------------------------------------------------------------------------------------
def _histogram(tensors: list[torch.Tensor], bins: int, *ranges: Any) -> Histogram:
    return _histogram_of([t.reshape(-1) for t in tensors], bins, *ranges)


def _histogram_of(
    flats: list[torch.Tensor],
    bins: int,
    clip: tuple[float, float] | None,
    grid: list[float] | None,
    channel_ranges: list[tuple[float, float]] | None,
    label: str,
) -> Histogram:
    """Counts of every finite value of ``flats`` over their min..max in ``bins`` equal bins."""
    lo, hi = _widened(*_finite_range(flats))
    counts = torch.zeros(bins, dtype=torch.int64)
    for flat in flats:
        counts += _counts(flat, bins, lo, hi)
    edges = torch.linspace(lo, hi, bins + 1, dtype=torch.float64).tolist()
    return Histogram(counts.tolist(), edges, clip, grid, channel_ranges, label)


def _widened(lo: float, hi: float) -> tuple[float, float]:
    """One value (or none) gets a bin range of width 1 around it."""
    return (lo - 0.5, hi + 0.5) if hi <= lo else (lo, hi)


def _counts(flat: torch.Tensor, bins: int, lo: float, hi: float) -> torch.Tensor:
    """int64 counts (on the CPU) of ``flat`` in ``bins`` equal bins over ``[lo, hi]``."""
    counts = torch.zeros(bins, dtype=torch.int64)
    for start in range(0, flat.numel(), _CHUNK):
        chunk = flat[start : start + _CHUNK].to(torch.float32)
        counts += torch.histc(chunk, bins, lo, hi).round().to(torch.int64).cpu()
    return counts


def _finite_range(flats: list[torch.Tensor]) -> tuple[float, float]:
    lo, hi = float("inf"), float("-inf")
    for flat in flats:
        finite = flat[torch.isfinite(flat)] if not bool(torch.isfinite(flat).all()) else flat
        if finite.numel():
            lo, hi = min(lo, float(finite.min())), max(hi, float(finite.max()))
    return (lo, hi) if lo <= hi else (0.0, 0.0)


class _InputCounter:
    """A forward pre-hook's record of a layer's floating-point inputs: their range, and the values
    themselves while they fit in ``_KEEP_VALUES`` (past that, only the range; counts need a second pass)."""

    def __init__(self) -> None:
        self.lo, self.hi = float("inf"), float("-inf")
        self.kept: list[torch.Tensor] | None = []
        self.size = 0
        self.seen = False
        self.counts: torch.Tensor | None = None  # the second pass: bins over (lo, hi)
        self.bins_range: tuple[float, float] = (0.0, 0.0)

    def __call__(self, module: nn.Module, args: tuple, kwargs: dict) -> None:
        x = first_input(args, kwargs)
        if x is None:
            return
        flat = x.detach().reshape(-1)
        if self.counts is not None:
            lo, hi = self.bins_range
            self.counts += _counts(flat, self.counts.numel(), lo, hi)
            return
        self.seen = True
        if flat.numel():
            lo, hi = _finite_range([flat])
            self.lo, self.hi = min(self.lo, lo), max(self.hi, hi)
        if self.kept is not None:
            self.size += flat.numel()
            if self.size <= _KEEP_VALUES:
                self.kept.append(flat.to(torch.float32, copy=True))  # the layer may update its input in place
            else:
                self.kept = None


def _run_samples(
    model: nn.Module, layer: nn.Module, hook: _InputCounter, samples: Sequence[Any], n: int, cancel: CancelLike | None
) -> None:
    """``samples[:n]`` through ``model`` in eval mode with ``hook`` on ``layer``; flags and hooks put back."""
    device = model_device(model)
    flags = [(m, m.training) for m in model.modules()]
    handle = layer.register_forward_pre_hook(hook, with_kwargs=True)
    model.eval()
    try:
        with torch.inference_mode():
            for i in range(n):
                check_cancel(cancel)  # before reading the sample: it may come from disk
                call_model(model, samples[i], device, sample_name(samples, i))
    finally:
        handle.remove()
        for module, flag in flags:
            module.training = flag


def _input_histogram(
    model: nn.Module,
    layer: nn.Module,
    q: QuantizedModule | None,
    samples: Sequence[Any],
    bins: int,
    max_samples: int,
    cancel: CancelLike | None,
) -> Histogram | None:
    """The layer's input values over ``samples[:max_samples]``, counted exactly; None when none
    reached it.  Inputs too large to hold run the samples a second time, into fixed bins."""
    if isinstance(samples, (torch.Tensor, Mapping)):
        samples = [samples]  # one batch, not a sequence of rows or keys
    n = min(len(samples), max_samples)
    hook = _InputCounter()
    _run_samples(model, layer, hook, samples, n, cancel)
    if not hook.seen:
        return None
    seen = (hook.lo, hook.hi) if hook.lo <= hook.hi else (0.0, 0.0)
    clip, grid, _, label = _input_range(q, seen)
    if hook.kept is not None:
        return _histogram_of(hook.kept, bins, clip, grid, None, label)
    lo, hi = _widened(*seen)
    hook.counts, hook.bins_range = torch.zeros(bins, dtype=torch.int64), (lo, hi)
    _run_samples(model, layer, hook, samples, n, cancel)
    edges = torch.linspace(lo, hi, bins + 1, dtype=torch.float64).tolist()
    return Histogram(hook.counts.tolist(), edges, clip, grid, None, label)
