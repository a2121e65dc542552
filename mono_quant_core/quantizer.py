"""The one entry point: ``quantize(model, config, calibration, ...) -> QuantResult``.

The caller's model is never changed: work happens on shallow clones that share
its tensor storage (no weight bytes copied), and each chosen layer is replaced
by its quantized twin one at a time, so peak memory stays near one float model
plus the quantized weights.
"""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, overload

import torch
from torch import nn

from . import validation
from .algorithms import SMOOTH_PHASE, RunAlgorithms, smoothed_layers, uses_samples
from .batches import as_call_args, move_batch
from .config import DEFAULT_VALIDATION_SAMPLES, QuantConfig
from .coverage import weight_coverage
from .devices import resolve_device
from .errors import CalibrationError, ConfigError
from .folding import fold_batchnorm, folded_records
from .loading.lazy_model import declared_bytes, lazy_weights
from .modules.attention import disable_fused_fast_paths
from .modules.base import QuantizedModule
from .modules.registry import replacement_for
from .progress import CancelLike, PhaseFn, PhasePlan, ProgressFn, RunPlan, Stepper, check_cancel
from .report import LayerReport, QuantReport, SkippedLayer
from .selection import select_layers
from .sequential import BlockPlan, BlockViews, Staged, in_order, onloaded, plan_blocks
from .serialization.metadata import versions
from .structure import get_submodule, model_device, names_by_module, set_submodule, shallow_clone
from .tensor import db_from_sums
from .tensor_stats import state_bytes

#: Calibration samples reserved for validation: every fifth one (static mode).
HOLDOUT_EVERY = 5
#: Validation runs on at most this many samples unless a config says otherwise (QuantConfig.validation_samples).
MAX_VALIDATION_SAMPLES = DEFAULT_VALIDATION_SAMPLES
#: Fewer calibration samples than this earn a warning.
MIN_CALIBRATION_SAMPLES = 16

log = logging.getLogger("mono_quant_core")


@dataclass
class QuantResult:
    """The quantized model (runnable now) and what the run measured."""

    model: nn.Module
    report: QuantReport
    config: QuantConfig
    source: dict[str, Any] = field(default_factory=dict)
    calibration_info: dict[str, Any] = field(default_factory=dict)


def split_samples(n: int, static: bool, limit: int = MAX_VALIDATION_SAMPLES) -> tuple[list[int], list[int], bool]:
    """Indices for calibration and for validation (at most ``limit``), and whether they overlap.

    Static mode holds out every fifth sample (the last one when there are fewer
    than five); the other modes calibrate nothing and validate on all samples.
    Samples past ``limit`` are neither (see :func:`skipped_validation_samples`).
    """
    indices = list(range(n))
    if not static:
        return [], indices[:limit], False
    if n == 0:
        return [], [], False
    if n == 1:
        return indices, indices, True
    held = [i for i in indices if i % HOLDOUT_EVERY == HOLDOUT_EVERY - 1] or [n - 1]
    calib = [i for i in indices if i not in set(held)]
    return calib, held[:limit], False


def skipped_validation_samples(n: int, calib_idx: list[int], val_idx: list[int], overlap: bool) -> int:
    """How many of ``n`` samples :func:`split_samples` set aside for validation but did not use."""
    return 0 if overlap else max(0, n - len(calib_idx) - len(val_idx))


class _Subset(Sequence[Any]):
    """The items of ``base`` at ``indices``, read only when accessed."""

    def __init__(self, base: Sequence[Any], indices: list[int]) -> None:
        self._base, self._indices = base, indices
        files = getattr(base, "files", None)
        if files is not None:  # a CalibrationSet: errors name the sample's file
            self.files = [files[i] for i in indices]

    def __len__(self) -> int:
        return len(self._indices)

    @overload
    def __getitem__(self, i: int) -> Any: ...
    @overload
    def __getitem__(self, i: slice) -> _Subset: ...
    def __getitem__(self, i: int | slice) -> Any:
        if isinstance(i, slice):
            return _Subset(self._base, self._indices[i])
        return self._base[self._indices[i]]


def _as_sequence(calibration: torch.Tensor | Iterable[Any] | None) -> Sequence[Any]:
    if calibration is None:
        return []
    if isinstance(calibration, torch.Tensor):
        return [calibration]
    if isinstance(calibration, Sequence):
        return calibration
    return list(calibration)


@dataclass
class Prepared:
    """Work a caller did before :func:`run_quantize` (the automatic fallback): the phases
    announced on ``stepper``, calibration done, every layer quantized, the float metric measured."""

    stepper: Stepper
    qparams: dict[str, tuple[torch.Tensor, torch.Tensor]]
    modules: dict[str, QuantizedModule]
    float_metric: dict[str, float] | None = None


def quantize(
    model: nn.Module,
    config: QuantConfig | None = None,
    calibration: torch.Tensor | Iterable[Any] | None = None,
    *,
    progress: ProgressFn | None = None,
    cancel: CancelLike | None = None,
    on_layer: Callable[[LayerReport], None] | None = None,
    on_phase: PhaseFn | None = None,
    validate: bool = True,
    source: dict[str, Any] | None = None,
    metric: Callable[[nn.Module], Any] | None = None,
) -> QuantResult:
    """Quantize ``model`` as ``config`` says; the caller's model is left untouched.

    ``calibration``: a sequence of batches (tensor / tuple / dict, or a
    ``CalibrationSet``).  Static mode calibrates on it, holding every fifth
    sample out for validation; other modes use it for validation only.
    ``metric``: the task metric (``evaluate(model) -> float | dict``, see
    :func:`mono_quant_core.load_metric`), run on the float and the quantized
    model into ``report.metrics``.  With ``config.target_output_sqnr_db`` or
    ``target_metric_drop`` set, the fewest layers are kept float (or widened,
    ``config.fallback``) that reach the target (``report.kept_for_accuracy``).
    ``progress(done, total, message)``, ``on_layer(LayerReport)`` and
    ``on_phase`` (a :class:`RunPlan` first, then a :class:`PhaseEvent` per
    unit of the phases ``calibrate``, ``quantize``, ``validate``, ``metric``; an
    automatic fallback adds ``sensitivity`` and ``search``) run on the
    calling thread.  Raises ``Cancelled`` when ``cancel`` is set, and
    ``ValidationFailed`` when a check fails under ``on_failure="error"``.
    """
    config = config or QuantConfig()
    config.validate()
    options: dict[str, Any] = {
        "progress": progress,
        "cancel": cancel,
        "on_layer": on_layer,
        "on_phase": on_phase,
        "validate": validate,
        "source": source,
        "metric": metric,
    }
    lazy = lazy_weights(model)
    searching = config.target_output_sqnr_db is not None or config.target_metric_drop is not None
    if lazy is not None and (searching or config.smoothquant_alpha is not None or config.fold_batchnorm):
        # The search and SmoothQuant rerun or rewrite the float model many times, folding rewrites
        # its convolutions' weights: they get it in memory.
        log.info(
            "a target accuracy, SmoothQuant or BatchNorm folding needs the float model in memory: "
            "reading all its weights"
        )
        model = shallow_clone(model)
        lazy.materialize(model)
    if config.fold_batchnorm:  # Conv→BatchNorm pairs folded on a copy, before anything measures the model
        model = fold_batchnorm(model).model
    if searching:
        from .fallback import quantize_to_target

        if config.smoothquant_alpha is not None:
            # The search ranks and tries layers on the unsmoothed model's calibration.
            raise ConfigError(
                "smoothquant_alpha: SmoothQuant cannot be combined with a target accuracy yet; "
                "set the target or SmoothQuant, not both",
                key="smoothquant_alpha",
            )

        return quantize_to_target(model, config, _as_sequence(calibration), **options)
    return run_quantize(model, config, _as_sequence(calibration), **options)


def layer_configs(model: nn.Module, config: QuantConfig, chosen: Sequence[str]) -> dict[str, QuantConfig | None]:
    """Each chosen layer's own settings (``layer_overrides`` applied); None: kept float."""
    return {name: config.layer_config(name) for name in chosen}


def any_static(configs: dict[str, QuantConfig | None]) -> bool:
    """Whether any layer needs calibration (static mode)."""
    return any(c is not None and c.needs_calibration for c in configs.values())


def kept_float_by_override(model: nn.Module, configs: dict[str, QuantConfig | None]) -> list[SkippedLayer]:
    return [
        SkippedLayer(name, type(get_submodule(model, name)).__name__, "kept float by layer_overrides")
        for name, c in configs.items()
        if c is None
    ]


def run_quantize(model: nn.Module, config: QuantConfig, samples: Sequence[Any], **options: Any) -> QuantResult:
    """:func:`quantize` for a given config, without the automatic fallback, on ``config.device``.

    The computing model is the caller's own when it is already on that device, else a shallow
    clone moved there (the caller's model is never moved); a model built without its weights
    reads them onto the device for the run.  ``options``: those of :func:`_run_quantize`.
    """
    device = resolve_device(config.device)
    lazy = lazy_weights(model)
    if lazy is None:
        if any(True for _ in itertools.chain(model.parameters(), model.buffers())) and model_device(model) != device:
            model = shallow_clone(model).to(device)
        result = _run_quantize(model, config, samples, device=device, **options)
    else:
        with lazy.reading_to(device):
            if any(b.device != device for b in model.buffers()):
                model = shallow_clone(model)  # its own buffer dicts: the caller's buffers stay
                for module in model.modules():
                    for key, buffer in module._buffers.items():
                        if buffer is not None:
                            module._buffers[key] = buffer.to(device)
            result = _run_quantize(model, config, samples, device=device, **options)
    return result


def _run_quantize(
    model: nn.Module,
    config: QuantConfig,
    samples: Sequence[Any],
    *,
    progress: ProgressFn | None = None,
    cancel: CancelLike | None = None,
    on_layer: Callable[[LayerReport], None] | None = None,
    on_phase: PhaseFn | None = None,
    validate: bool = True,
    source: dict[str, Any] | None = None,
    metric: Callable[[nn.Module], Any] | None = None,
    prepared: Prepared | None = None,
    device: torch.device | None = None,
) -> QuantResult:
    """:func:`quantize` for a given config, without the automatic fallback (``device``: what the
    report records as the run's device)."""
    started = time.perf_counter()
    lazy = lazy_weights(model)
    selection = select_layers(model, config)
    configs = layer_configs(model, config, selection.chosen)
    chosen = [name for name in selection.chosen if configs[name] is not None]
    static = any_static(configs)
    if static and len(samples) == 0:
        raise ConfigError("mode: static needs calibration samples (a calibration folder)")
    sampled = uses_samples(configs)
    if sampled and len(samples) == 0:
        raise ConfigError(f"{sampled[0]}: needs calibration samples (a calibration folder)")
    calib_idx, val_idx, overlap = split_samples(len(samples), static or bool(sampled), config.validation_samples)
    skipped_val = skipped_validation_samples(len(samples), calib_idx, val_idx, overlap)
    if not validate:
        val_idx, skipped_val = [], 0
    task_metric = None
    if metric is not None:
        from .metrics import as_metric

        task_metric = as_metric(metric)

    reference = shallow_clone(model).eval()  # float, with its own training flags
    report = QuantReport(
        dtype=config.dtype,
        mode=config.mode,
        skipped=[*selection.skipped, *kept_float_by_override(model, configs)],
        config=config.to_dict(),
        versions=versions(),
        calibration_samples=len(calib_idx),
        validation_samples=len(val_idx),
        validation_samples_skipped=skipped_val,
        calibration_method=config.observer if static else None,
        algorithm=config.algorithm_settings(),
        device=None if device is None else str(device),
        folded_batchnorm=folded_records(model),  # what quantize() folded (fold_batchnorm)
    )
    validation.record_skipped_calibration(report, samples)
    check_cancel(cancel)
    if prepared is None:
        plan = _plan(model, reference, chosen, samples, calib_idx, val_idx, validate, static, on_phase)
        if smoothed_layers(configs):
            first = plan.phases[0]  # calibration's unit time, when there is one, is a smoothing sample's too
            unit_s = first.unit_seconds if first.phase == "calibrate" else 0.0
            plan = RunPlan((PhasePlan(SMOOTH_PHASE, len(calib_idx), unit_s), *plan.phases))
        if task_metric is not None:  # its cost is the user's: measured by the run itself
            plan = RunPlan((*plan.phases, PhasePlan("metric", 2)))
        stepper = Stepper(plan, progress, cancel, on_phase)
    else:
        stepper = prepared.stepper
    stepper.check()
    algorithms = RunAlgorithms(configs, _Subset(samples, calib_idx), stepper)
    if algorithms.rebuilds_layers and prepared is not None:
        prepared = Prepared(prepared.stepper, prepared.qparams, {}, prepared.float_metric)
    work = algorithms.smooth(model)  # the float model whose layers are quantized
    if algorithms.smoothing is not None:
        report.warnings.extend(algorithms.smoothing.warnings)
    if work is not model:
        reference = shallow_clone(work).eval()
    qmodel = shallow_clone(work).eval()
    # torch's fused transformer paths read int8 codes in the quantized model (GPTQ runs it part
    # quantized) and nested tensors meet hooked layers in the float one: both take the regular path.
    every_name = names_by_module(work)
    replaced = [alias for name in chosen for alias in every_name[id(get_submodule(work, name))]]
    for clone in (reference, qmodel):
        disable_fused_fast_paths(clone, replaced)

    # A lazily built model runs its calibration samples block by block when it can (sequential.py).
    in_blocks = None
    if lazy is not None and prepared is None and (static or sampled):
        in_blocks = plan_blocks(reference, chosen, _Subset(samples, calib_idx), stepper.cancel_token)
        if in_blocks is not None:
            log.info(
                "block by block: %d blocks (%s, ...), one read at a time%s",
                len(in_blocks.blocks),
                in_blocks.blocks[0],
                "; each feeds the next, only the last one's outputs kept" if in_blocks.chain else "",
            )
    float_chain = None
    qparams: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    if static:
        if prepared is None:
            stepper.begin("calibrate", f"calibrating on {len(calib_idx)} samples")
            calibrated = [n for n in chosen if (c := configs[n]) is not None and c.needs_calibration]
            qparams, float_chain = _calibrate(
                reference, calibrated, _Subset(samples, calib_idx), config, stepper, report, in_blocks
            )
        else:
            qparams = prepared.qparams
        if overlap:
            report.warnings.append("only 1 calibration sample: validation reuses it, so output SQNR is optimistic")
        elif len(calib_idx) < MIN_CALIBRATION_SAMPLES:
            report.warnings.append(
                f"only {len(calib_idx)} calibration samples; use at least "
                f"{MIN_CALIBRATION_SAMPLES} for stable activation ranges"
            )

    layer_modules: dict[str, QuantizedModule] = {}
    if prepared is None:
        stepper.begin("quantize", f"quantizing {len(chosen)} layers")
    aliases = names_by_module(work)  # a layer reused under several names is replaced at each
    views = None
    if in_blocks is not None and algorithms.captures_inputs and in_order(in_blocks, chosen):
        # A chain keeps only its last block's outputs: bias correction runs its own float chain then.
        floats = None if in_blocks.chain else float_chain
        calibration = _Subset(samples, calib_idx)
        views = BlockViews(in_blocks, qmodel, reference, calibration, stepper.cancel_token, lazy, floats)
    float_chain = None  # the recorded float outputs: the views hold them if they need them
    try:
        for name in chosen:
            stepper.check()
            float_module = get_submodule(work, name)
            layer_config = effective_layer_config(configs[name], name, float_module, qparams, report)
            if prepared is not None and name in prepared.modules:
                qmodule = prepared.modules[name]
            else:  # a lazy layer's float weights are read for its build, released after
                with onloaded(lazy, work, name):
                    qmodule = algorithms.build(
                        name, float_module, layer_config, qparams.get(name), reference, qmodel, views
                    )
            if name:
                for alias in aliases[id(float_module)]:
                    set_submodule(qmodel, alias, qmodule)
            else:
                qmodel = qmodule.eval()
            layer_modules[name] = qmodule
            layer = _layer_report(name, float_module, qmodule, layer_config)
            algorithms.describe(name, qmodule, layer)
            report.layers.append(layer)
            if on_layer is not None:
                on_layer(layer)
            if prepared is None:
                stepper.step(f"quantized {name or type(float_module).__name__}")
    finally:
        if views is not None:
            views.close()

    if lazy is not None:  # what stays float is read once, in the dtype the script declares
        lazy.materialize(qmodel)
    report.original_bytes = declared_bytes(model) if lazy is not None else state_bytes(model)
    report.quantized_bytes = state_bytes(qmodel)
    report.compression_ratio = report.original_bytes / report.quantized_bytes if report.quantized_bytes else None
    report.coverage = weight_coverage(model, report.skipped, layer_modules)
    result = QuantResult(
        model=qmodel,
        report=report,
        config=config,
        source=dict(source if source is not None else getattr(model, "_mono_quant_source", {}) or {}),
        calibration_info=_calibration_info(samples, calib_idx, config if static else None),
    )
    if validate:
        stepper.begin("validate", f"validating on {len(val_idx)} samples")
        validation.validate(result, reference, layer_modules, _Subset(samples, val_idx), stepper)
    if task_metric is not None:
        stepper.begin("metric", f"measuring {task_metric.name}")
        float_values = prepared.float_metric if prepared is not None else None
        if float_values is None:
            float_values = task_metric.evaluate(reference, "on the float model")
        stepper.step(f"{task_metric.name} of the float model")
        quantized_values = task_metric.evaluate(result.model, "on the quantized model")
        stepper.step(f"{task_metric.name} of the quantized model")
        report.metrics = metric_entries(float_values, quantized_values, task_metric.higher_is_better)
    report.elapsed_s = time.perf_counter() - started
    if validate:
        validation.enforce(result)
    return result


def metric_entries(
    float_values: dict[str, float], quantized_values: dict[str, float], higher_is_better: bool
) -> dict[str, dict[str, Any]]:
    """``report.metrics``: each value on the float and the quantized model and their difference."""
    entries: dict[str, dict[str, Any]] = {}
    for key, x in float_values.items():
        y = quantized_values.get(key)
        entries[key] = {
            "float": x,
            "quantized": y,
            "delta": None if y is None else y - x,
            "higher_is_better": higher_is_better,
        }
    return entries


def effective_layer_config(
    layer_config: QuantConfig | None,
    name: str,
    float_module: nn.Module,
    qparams: dict[str, tuple[torch.Tensor, torch.Tensor]],
    report: QuantReport | None = None,
) -> QuantConfig:
    """A layer's settings as it is quantized: static without observed inputs becomes weight-only."""
    assert layer_config is not None  # float-kept layers are not quantized
    if layer_config.needs_calibration and name not in qparams:
        if report is not None and type(float_module).__name__ != "Embedding":
            report.warnings.append(
                f"{name}: saw no floating-point input during calibration; "
                "its weights are quantized, its activations stay float"
            )
        # SmoothQuant balances activations: a weight-only layer has none to balance.
        return layer_config.replace(mode="weight-only", smoothquant_alpha=None)
    return layer_config


def build_layer(
    float_module: nn.Module, layer_config: QuantConfig, qparams: tuple[torch.Tensor, torch.Tensor] | None
) -> QuantizedModule:
    """The quantized twin of ``float_module`` with ``layer_config`` (and its input qparams, static)."""
    replacement = replacement_for(float_module)
    assert replacement is not None  # select_layers chooses only layers that have a replacement
    qmodule = replacement.from_float(float_module, layer_config)
    if qparams is not None and layer_config.mode == "static":
        qmodule.set_input_qparams(*qparams)
    return qmodule


#: Expected cost of one unit of each phase, in float forward passes of one sample:
#: calibration runs the float model with observers; validation runs the float
#: model and the quantized model once per sample (per-layer SQNR in the same
#: passes; the round trip's rebuilt layers on two samples), docs/benchmarks.md.
CALIBRATE_FORWARDS = 1.1
VALIDATE_FORWARDS = 2.0
#: Seconds to quantize one weight element, before any layer was measured.
QUANTIZE_SECONDS_PER_ELEMENT = 6e-9


def _plan(
    model: nn.Module,
    reference: nn.Module,
    chosen: Sequence[str],
    samples: Sequence[Any],
    calib_idx: list[int],
    val_idx: list[int],
    validate: bool,
    static: bool,
    on_phase: PhaseFn | None,
) -> RunPlan:
    """The run's phases with their expected unit times (one timed float forward when someone listens)."""
    forward_s = 0.0
    probe = calib_idx[:1] or val_idx[:1]
    if on_phase is not None and probe:
        forward_s = _timed_forward(reference, samples[probe[0]])
    elements = sum(sum(t.numel() for t in get_submodule(model, name).parameters(recurse=False)) for name in chosen)
    phases = []
    if static:
        phases.append(PhasePlan("calibrate", len(calib_idx), CALIBRATE_FORWARDS * forward_s))
    per_layer = QUANTIZE_SECONDS_PER_ELEMENT * elements / len(chosen) if chosen else 0.0
    phases.append(PhasePlan("quantize", len(chosen), per_layer, per_forward=False))
    if validate:
        phases.append(validate_plan(len(val_idx), VALIDATE_FORWARDS * forward_s))
    return RunPlan(tuple(phases))


def validate_plan(samples: int, unit_seconds: float) -> PhasePlan:
    """Validation's phase: writing the file format (its first unit), then one unit per sample.

    The first :data:`~.validation.ROUND_TRIP_SAMPLES` samples also run the layers rebuilt from
    the file, and the first quantized forward packs the kernels: with the first unit, the warm-up."""
    warmup = 1 + min(validation.ROUND_TRIP_SAMPLES, samples)
    return PhasePlan("validate", samples + 1, unit_seconds, warmup=warmup)


def _timed_forward(model: nn.Module, batch: Any) -> float:
    """Seconds of one float forward pass on ``batch`` (errors are left to the run itself)."""
    started = time.perf_counter()
    try:
        with torch.inference_mode():
            args, kwargs = move_batch(*as_call_args(batch), model_device(model))
            model(*args, **kwargs)
    except Exception:  # the run reports this sample's error with its file name
        return 0.0
    return time.perf_counter() - started


def _calibrate(
    reference: nn.Module,
    names: Sequence[str],
    samples: Sequence[Any],
    config: QuantConfig,
    stepper: Stepper,
    report: QuantReport,
    plan: BlockPlan | None = None,
) -> tuple[dict[str, tuple[torch.Tensor, torch.Tensor]], Staged | None]:
    """The calibrated layers' input qparams; block by block with ``plan`` (then also the float
    blocks' outputs, which bias correction reuses)."""
    from .calibration.runner import calibrate, calibrate_in_blocks

    chain = None
    if plan is None:
        result = calibrate(reference, list(names), samples, config, stepper.span(), stepper.cancel_token)
    else:
        driver = shallow_clone(reference)
        result, chain = calibrate_in_blocks(
            plan, driver, reference, list(names), samples, config, stepper.span(), stepper.cancel_token
        )
    qparams = dict(result)
    if not qparams and any(type(get_submodule(reference, n)).__name__ != "Embedding" for n in names):
        raise CalibrationError("calibration observed no layer inputs: did the samples reach the model?")
    return qparams, chain


def _layer_report(name: str, float_module: nn.Module, qmodule: QuantizedModule, config: QuantConfig) -> LayerReport:
    # Measured while quantizing, block by block (no second full-size pass).
    sums = qmodule.weight_error_sums.values()
    sqnr = db_from_sums(float(sum(s for s, _ in sums)), float(sum(n for _, n in sums))) if sums else None
    meta = qmodule.quant_meta()
    # The whole subtree: an attention's twin holds its out_proj too.
    original = sum(p.numel() * p.element_size() for p in float_module.parameters())
    return LayerReport(
        name=name,
        type=type(float_module).__name__,
        dtype=config.dtype,
        scheme=None if config.is_cast else config.scheme,
        granularity=None if config.is_cast else meta.get("granularity", config.granularity),
        mode=None if config.is_cast else config.mode,
        group_size=meta.get("group_size"),
        shape=list(meta.get("shape", [])),
        weight_sqnr_db=sqnr,
        original_bytes=original,
        quantized_bytes=qmodule.quantized_bytes(),
        status="low-sqnr" if sqnr is not None and sqnr < config.warn_layer_sqnr_db else "ok",
    )


def _calibration_info(samples: Sequence[Any], calib_idx: list[int], config: QuantConfig | None) -> dict[str, Any]:
    files_hash = None
    if hasattr(samples, "file_list_sha256"):
        files_hash = samples.file_list_sha256()
    return {
        "method": None if config is None else config.observer,
        "samples": len(calib_idx),
        "total_samples": len(samples),
        "holdout": f"every {HOLDOUT_EVERY}th sample" if config is not None else "all samples",
        "files_sha256": files_hash,
    }
