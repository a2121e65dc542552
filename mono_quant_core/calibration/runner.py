"""The calibration run: samples through the model, observers on the chosen layers' inputs."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence, Sized
from typing import Any

import torch
from torch import nn

from ..batches import call_model, sample_name
from ..config import QuantConfig
from ..errors import CalibrationError
from ..loading.lazy_model import lazy_weights
from ..progress import CancelLike, ProgressFn, check_cancel
from ..sequential import BlockPlan, Staged, onloaded
from ..structure import get_submodule, model_device
from ..tensor.activations import ACT_QMAX, ACT_QMIN
from .base import Observer, affine_qparams
from .hooks import observed_inputs
from .observers import make_observer

#: ``(scale, zero_point)`` or ``(lo, hi)`` of one layer's input.
TensorPair = tuple[torch.Tensor, torch.Tensor]


class CalibrationResult(dict[str, TensorPair]):
    """``{layer name: (scale, zero_point)}`` for every layer that saw a floating-point input.

    Scales are 0-dim float32 tensors, zero points 0-dim int32 tensors (``[4]``
    for a MultiheadAttention: query, key, value, out_proj input), on the
    model's device (per tensor, asymmetric, range [-128, 127]).  Also:
    ``unobserved`` — the named layers that never saw one (Embedding, or a
    layer the samples did not reach), in the order given; ``ranges`` —
    ``{name: (lo, hi)}`` float32 tensors the qparams come from; ``samples`` —
    how many samples ran.
    """

    def __init__(
        self, qparams: dict[str, TensorPair], unobserved: list[str], ranges: dict[str, TensorPair], samples: int
    ) -> None:
        super().__init__(qparams)
        self.unobserved = unobserved
        self.ranges = ranges
        self.samples = samples


def _finish(observers: dict[str, Observer], samples: int) -> CalibrationResult:
    """qparams of every observed layer; one host sync to check that all ranges are finite."""
    ranges = {name: obs.min_max(ACT_QMIN, ACT_QMAX) for name, obs in observers.items() if obs.observed}
    # An attention's range is one per projection input ([4] tensors), every other layer's one.
    if ranges and not bool(torch.isfinite(torch.cat([v.reshape(-1) for r in ranges.values() for v in r])).all()):
        bad = next(n for n, (lo, hi) in ranges.items() if not bool((torch.isfinite(lo) & torch.isfinite(hi)).all()))
        raise CalibrationError(f"{bad}: its calibration inputs contain NaN or Inf")
    qparams = {name: affine_qparams(lo, hi) for name, (lo, hi) in ranges.items()}
    unobserved = [name for name in observers if name not in ranges]
    return CalibrationResult(qparams, unobserved, ranges, samples)


def calibrate(
    model: nn.Module,
    layer_names: list[str],
    samples: Iterable,
    config: QuantConfig,
    progress: ProgressFn | None = None,
    cancel: CancelLike | None = None,
) -> CalibrationResult:
    """Run ``samples`` through ``model`` and return the input-activation qparams of ``layer_names``.

    Runs in eval mode under ``torch.inference_mode()`` (training flags are put
    back afterwards; no weight or buffer changes).  Checks ``cancel`` before
    each sample and calls ``progress(i, n, "calibrating i/n")`` after sample
    i (``n`` grows with ``i`` when the samples have no length), so a cancel
    requested in that callback stops the run before sample i + 1.  A caller
    that calibrates as part of a larger run maps these counts into its own
    with :func:`mono_quant_core.progress.span`.  No hook is left on any
    module, whatever happens.
    """
    if isinstance(samples, (torch.Tensor, Mapping)):
        samples = [samples]  # one batch, not a sequence of rows or of keys
    n = len(samples) if isinstance(samples, Sized) else None
    device = model_device(model)
    flags = [(m, m.training) for m in model.modules()]
    model.eval()
    done = 0
    try:
        with observed_inputs(model, layer_names, lambda: make_observer(config)) as observers:  # noqa: SIM117
            with torch.inference_mode():  # the observers are read below, outside inference mode
                batches = iter(samples)
                while True:
                    check_cancel(cancel)  # before reading the sample: it may come from disk
                    batch = next(batches, _END)
                    if batch is _END:
                        break
                    call_model(model, batch, device, sample_name(samples, done))  # outputs are dropped unseen
                    done += 1
                    if progress is not None:
                        progress(done, max(n or 0, done), f"calibrating {done}/{n if n is not None else '?'}")
        # Outside inference mode: the returned tensors are ordinary tensors that
        # callers may copy into buffers or update in place.
        with torch.no_grad():
            return _finish(observers, done)
    finally:
        for module, flag in flags:
            module.training = flag


_END = object()


def calibrate_in_blocks(
    plan: BlockPlan,
    driver: nn.Module,
    model: nn.Module,
    layer_names: list[str],
    samples: Sequence[Any],
    config: QuantConfig,
    progress: ProgressFn | None = None,
    cancel: CancelLike | None = None,
) -> tuple[CalibrationResult, Staged]:
    """:func:`calibrate`, block by block (:mod:`mono_quant_core.sequential`): the same qparams.

    ``model`` carries the observers and runs each block (read from the checkpoint while it
    runs, when the model is built lazily); ``driver``, another float clone of it without
    observers, runs the model's first stages to capture each block's inputs.  Also returns the
    float blocks' recorded outputs (a :class:`Staged` over ``model``), which bias correction
    reuses.
    """
    lazy = lazy_weights(model)
    n, blocks = len(samples), plan.blocks
    total = n * (len(blocks) + 1)
    flags = [(m, m.training) for m in [*model.modules(), *driver.modules()]]
    model.eval()
    driver.eval()
    try:
        with observed_inputs(model, layer_names, lambda: make_observer(config)) as observers:
            inputs = Staged(driver, plan, samples, cancel, lazy)
            for i, name in enumerate(blocks):
                calls = inputs.capture(i)
                with onloaded(lazy, model, name):
                    inputs.finish(get_submodule(model, name), i, calls)
                if progress is not None:
                    progress(n * (i + 1), total, f"calibrating block {i + 1}/{len(blocks)}")
            # The layers outside the blocks: the whole model once, every block answered.
            staged = Staged(model, plan, samples, cancel, lazy)
            staged.outputs = inputs.outputs
            staged.run_outside()
            if progress is not None:
                progress(total, total, f"calibrated on {n} samples")
        with torch.no_grad():
            return _finish(observers, n), staged
    finally:
        for module, flag in flags:
            module.training = flag
