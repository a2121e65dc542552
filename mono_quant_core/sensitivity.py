"""Per-layer sensitivity: how much each layer, quantized alone, costs the model's output and task metric.

``analyze_sensitivity`` computes the float reference outputs on the validation
samples once, quantizes every selected layer once, and then swaps one layer at a
time into a shallow clone of the model, so the cost is about one forward pass
over the validation samples per layer (docs/benchmarks.md).  The automatic
fallback (:mod:`mono_quant_core.fallback`) searches with the same workbench.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from .batches import call_model, sample_name
from .config import QuantConfig
from .errors import ConfigError
from .modules.base import QuantizedModule
from .outputs import SqnrAccumulator, flat_tensors
from .progress import CancelLike, PhaseFn, PhasePlan, ProgressFn, RunPlan, Stepper, check_cancel
from .report import _decode_float, _encode
from .validation import FloatReferences, LayerReferences, references_limit

#: Sensitivity runs on at most this many validation samples (validation: QuantConfig.validation_samples).
MAX_SAMPLES = 32


@dataclass
class LayerSensitivity:
    """One layer quantized alone: the model's output SQNR (and metric) against the float model."""

    name: str
    type: str
    dtype: str
    weight_sqnr_db: float | None = None
    output_sqnr_db: float | None = None
    #: The task metric with only this layer quantized (its first value when it returns several).
    metric: float | None = None
    #: How much worse that is than the float model's (positive: worse), None without a metric.
    metric_drop: float | None = None
    #: 1 for the most sensitive layer.
    rank: int = 0

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> LayerSensitivity:
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: _decode_float(v) for k, v in d.items() if k in known})


@dataclass
class SensitivityReport:
    """Every selected layer's sensitivity, most sensitive first."""

    layers: list[LayerSensitivity] = field(default_factory=list)
    dtype: str = "int8"
    mode: str = "dynamic"
    #: The output SQNR with every selected layer quantized.
    all_quantized_output_sqnr_db: float | None = None
    metric_name: str | None = None
    metric_higher_is_better: bool = True
    float_metric: float | None = None
    validation_samples: int = 0
    calibration_samples: int = 0
    elapsed_s: float = 0.0
    config: dict[str, Any] = field(default_factory=dict)
    #: Layers the config's ``layer_overrides`` keep float: not analyzed.
    kept_float: list[str] = field(default_factory=list)

    def layer(self, name: str) -> LayerSensitivity:
        for layer in self.layers:
            if layer.name == name:
                return layer
        raise KeyError(name)

    def ranking(self) -> list[str]:
        return [layer.name for layer in self.layers]

    def to_dict(self) -> dict[str, Any]:
        return _encode(dataclasses.asdict(self))

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent, allow_nan=False)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SensitivityReport:
        known = {f.name for f in dataclasses.fields(cls)}
        kwargs = {k: _decode_float(v) for k, v in d.items() if k in known}
        kwargs["layers"] = [LayerSensitivity.from_dict(x) for x in d.get("layers", [])]
        return cls(**kwargs)


@dataclass
class Evaluation:
    """The model with some layers quantized, measured on the validation samples."""

    output_sqnr_db: float | None
    metric: dict[str, float] | None = None


#: Evaluates each named layer quantized alone and yields ``(name, Evaluation)`` in any order:
#: :func:`evaluate_each` here, or ``mono_quant_core.cluster``'s fan-out to Ray workers, which
#: ships the workbench (``Workbench.__getstate__``) and calls ``evaluate`` there.
EvaluateMany = Callable[["Workbench", list[str]], Iterator[tuple[str, Evaluation]]]


def evaluate_each(bench: Workbench, names: list[str]) -> Iterator[tuple[str, Evaluation]]:
    """The layers one after another in this process."""
    for name in names:
        bench.stepper.check()
        yield name, bench.evaluate({name: bench.quantized(name)})


def sensitivity_order(layers: Iterable[LayerSensitivity], by_metric: bool) -> list[LayerSensitivity]:
    """Most sensitive first: the largest metric drop (with a metric), else the lowest output SQNR."""

    def sqnr_key(layer: LayerSensitivity) -> float:
        return math.inf if layer.output_sqnr_db is None else layer.output_sqnr_db

    def key(layer: LayerSensitivity) -> tuple[float, float]:
        if by_metric:
            drop = -math.inf if layer.metric_drop is None else layer.metric_drop
            return (-drop, sqnr_key(layer))
        return (sqnr_key(layer), 0.0)

    ordered = sorted(layers, key=key)
    for i, layer in enumerate(ordered):
        layer.rank = i + 1
    return ordered


class Workbench:
    """The float reference, each selected layer quantized, and the float outputs on the validation samples.

    ``evaluate({name: quantized module})`` runs the model with just those layers
    swapped in (the others float) and compares its outputs with the float ones.
    The caller's model is never changed: the swaps happen in a shallow clone.
    """

    def __init__(
        self,
        model: nn.Module,
        config: QuantConfig,
        samples: Sequence[Any],
        metric: Any,
        stepper_factory: Callable[[RunPlan], Stepper],
        *,
        extra_phases: Callable[[int, float], tuple[PhasePlan, ...]] = lambda layers, forward_s: (),
        timed: bool = False,
    ) -> None:
        from .quantizer import (
            CALIBRATE_FORWARDS,
            QUANTIZE_SECONDS_PER_ELEMENT,
            _calibrate,
            _Subset,
            _timed_forward,
            any_static,
            layer_configs,
            split_samples,
        )
        from .report import QuantReport
        from .selection import select_layers
        from .structure import get_submodule, model_device, names_by_module, shallow_clone

        self.started = time.perf_counter()
        self.model, self.config = model, config
        self.metric = None
        if metric is not None:
            from .metrics import as_metric

            self.metric = as_metric(metric)
        self.selection = select_layers(model, config)
        self.configs = layer_configs(model, config, self.selection.chosen)
        self.names = [n for n in self.selection.chosen if self.configs[n] is not None]
        self.kept_float = [n for n in self.selection.chosen if self.configs[n] is None]
        if not self.names:
            raise ConfigError("no layer is selected for quantization: nothing to analyze")
        self.static = any_static(self.configs)
        if self.static and len(samples) == 0:
            raise ConfigError("mode: static needs calibration samples (a calibration folder)")
        calib_idx, val_idx, overlap = split_samples(len(samples), self.static, MAX_SAMPLES)
        if not val_idx:
            raise ConfigError("sensitivity needs samples to run the model on (a calibration folder)")
        self.samples = samples
        self.calib_idx, self.val_idx, self.overlap = calib_idx, val_idx[:MAX_SAMPLES], overlap
        self.val = _Subset(samples, self.val_idx)
        self.reference = shallow_clone(model).eval()
        self.work = shallow_clone(model).eval()
        self.device = model_device(model)
        self.aliases = names_by_module(model)
        self.alias_names = {n: list(self.aliases.get(id(get_submodule(model, n)), [])) for n in self.names}
        self.float_modules = {n: get_submodule(self.work, n) for n in self.names}
        self._float_of = {n: get_submodule(model, n) for n in self.names}

        forward_s = 0.0
        if timed:
            forward_s = _timed_forward(self.reference, samples[(calib_idx or self.val_idx)[0]])
        elements = sum(sum(t.numel() for t in m.parameters(recurse=False)) for m in self._float_of.values())
        phases: list[PhasePlan] = []
        if self.static:
            phases.append(PhasePlan("calibrate", len(calib_idx), CALIBRATE_FORWARDS * forward_s))
        phases.append(
            PhasePlan(
                "quantize",
                len(self.names),
                QUANTIZE_SECONDS_PER_ELEMENT * elements / len(self.names),
                per_forward=False,
            )
        )
        # The first unit: the float outputs (and the float metric); then one forward pass per layer.
        phases.append(PhasePlan("sensitivity", len(self.names) + 1, forward_s * len(self.val_idx)))
        phases.extend(extra_phases(len(self.names), forward_s * len(self.val_idx)))
        self.stepper = stepper_factory(RunPlan(tuple(phases)))
        self.stepper.check()

        self.qparams: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        self.report = QuantReport(dtype=config.dtype, mode=config.mode)  # collects calibration warnings
        if self.static:
            self.stepper.begin("calibrate", f"calibrating on {len(calib_idx)} samples")
            calibrated = [n for n in self.names if (c := self.configs[n]) is not None and c.needs_calibration]
            self.qparams, _ = _calibrate(
                self.reference, calibrated, _Subset(samples, calib_idx), config, self.stepper, self.report
            )

        self.modules: dict[tuple[str, str], QuantizedModule] = {}
        self.layer_reports: dict[str, Any] = {}
        self.stepper.begin("quantize", f"quantizing {len(self.names)} layers")
        for name in self.names:
            self.stepper.check()
            self.quantized(name)
            self.stepper.step(f"quantized {name or type(self._float_of[name]).__name__}")
        self._reference_outputs: list[list[torch.Tensor]] = []
        self.float_references: FloatReferences | None = None
        self.float_metric: dict[str, float] | None = None

    # -- layers ---------------------------------------------------------------------------
    def layer_config(self, name: str, dtype: str | None = None) -> QuantConfig:
        """Layer ``name``'s settings, at ``dtype`` when given (a rung of the fallback ladder)."""
        from .quantizer import effective_layer_config

        base = self.configs[name]
        assert base is not None
        if dtype is not None and dtype != base.dtype:
            base = base._with_fields({"dtype": dtype}) or base
        return effective_layer_config(base, name, self._float_of[name], self.qparams)

    def quantized(self, name: str, dtype: str | None = None) -> QuantizedModule:
        """Layer ``name`` quantized with its own settings (or at ``dtype``), built once."""
        from .quantizer import _layer_report, build_layer

        layer_config = self.layer_config(name, dtype)
        key = (name, layer_config.dtype)
        if key not in self.modules:
            float_module = self._float_of[name]
            qmodule = build_layer(float_module, layer_config, self.qparams.get(name))
            self.modules[key] = qmodule
            self.layer_reports[f"{name}@{layer_config.dtype}"] = _layer_report(
                name, float_module, qmodule, layer_config
            )
        return self.modules[key]

    def weight_sqnr_db(self, name: str, dtype: str | None = None) -> float | None:
        layer_config = self.layer_config(name, dtype)
        self.quantized(name, dtype)
        report = self.layer_reports[f"{name}@{layer_config.dtype}"]
        return report.weight_sqnr_db

    # -- measuring --------------------------------------------------------------------------
    def measure_reference(self) -> None:
        """The float outputs on the validation samples (and the float metric): the sensitivity phase's first unit.

        The layers' float outputs are kept too (``float_references``), so that the final validation
        of the automatic fallback does not run the float model again."""
        outputs = []
        layers = []
        refs = LayerReferences(self.names, references_limit(len(self.val), len(self.names)))
        handles = refs.record(self.reference)
        try:
            with torch.inference_mode():
                for i in range(len(self.val)):
                    self.stepper.check()
                    refs.clear()
                    out = call_model(self.reference, self.val[i], self.device, sample_name(self.val, i, "validation"))
                    outputs.append(flat_tensors(out))
                    layers.append(refs.calls)
        finally:
            for h in handles:
                h.remove()
        self._reference_outputs = outputs
        self.float_references = FloatReferences(outputs, layers)
        if self.metric is not None:
            self.float_metric = self.metric.evaluate(self.reference, "on the float model")

    def evaluate(self, assignment: dict[str, QuantizedModule]) -> Evaluation:
        """The model with the layers of ``assignment`` swapped in, against the float outputs."""
        from .modules.attention import disable_fused_fast_paths
        from .structure import set_submodule

        runnable: nn.Module = self.work
        if "" in assignment:  # the whole model is one quantized layer
            runnable = assignment[""]
        swapped = [(alias, name) for name in assignment if name for alias in self.alias_names[name]]
        try:
            for alias, name in swapped:
                set_submodule(self.work, alias, assignment[name])
            disable_fused_fast_paths(runnable)  # the fused transformer paths would read int8 codes
            acc = SqnrAccumulator()
            with torch.inference_mode():
                for i in range(len(self.val)):
                    check_cancel(None if self.stepper is None else self.stepper.cancel_token)
                    name = sample_name(self.val, i, "validation")
                    out = call_model(runnable, self.val[i], self.device, name, "the quantized model")
                    for ref, q in zip(self._reference_outputs[i], flat_tensors(out), strict=False):
                        acc.add(ref, q)
            metric = None
            if self.metric is not None:
                metric = self.metric.evaluate(runnable, "on the partly quantized model")
            return Evaluation(acc.db(), metric)
        finally:
            for alias, name in swapped:
                set_submodule(self.work, alias, self.float_modules[name])

    def metric_drop(self, values: dict[str, float] | None) -> float | None:
        """How much worse ``values``' first metric is than the float model's (positive: worse)."""
        if self.metric is None or values is None or self.float_metric is None:
            return None
        from .metrics import metric_drop

        key = next(iter(self.float_metric))
        if key not in values:
            return None
        return metric_drop(self.float_metric[key], values[key], self.metric.higher_is_better)

    def __getstate__(self) -> dict[str, Any]:
        """What ``evaluate`` needs on another machine (a Ray worker): the model being swapped, the
        quantized layers, the validation samples and float outputs, the metric; no progress or callers."""
        from .quantizer import _Subset

        val = _Subset([self.val[i] for i in range(len(self.val))], list(range(len(self.val))))
        if hasattr(self.val, "files"):
            val.files = self.val.files
        keep = ("config", "names", "metric", "work", "device", "float_modules", "alias_names", "float_metric")
        state = {key: self.__dict__[key] for key in keep}
        state.update(val=val, _reference_outputs=self._reference_outputs, stepper=None)
        state["shipped_layers"] = {name: self.quantized(name) for name in self.names}
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)

    def analyze(self, evaluate_many: EvaluateMany | None = None) -> SensitivityReport:
        """Each layer quantized alone, then every layer quantized: the sensitivity phase.

        ``evaluate_many`` runs the per-layer evaluations (default: :func:`evaluate_each`, here).
        """
        self.stepper.begin("sensitivity", f"measuring {len(self.names)} layers one at a time")
        self.measure_reference()
        self.stepper.step("measured the float model")
        evaluations: dict[str, Evaluation] = {}
        for name, evaluation in (evaluate_many or evaluate_each)(self, list(self.names)):
            evaluations[name] = evaluation
            self.stepper.step(f"measured {name or type(self._float_of[name]).__name__}")
        layers: list[LayerSensitivity] = []
        for name in self.names:
            evaluation = evaluations[name]
            first = None if evaluation.metric is None else next(iter(evaluation.metric.values()), None)
            layers.append(
                LayerSensitivity(
                    name=name,
                    type=type(self._float_of[name]).__name__,
                    dtype=self.layer_config(name).dtype,
                    weight_sqnr_db=self.weight_sqnr_db(name),
                    output_sqnr_db=evaluation.output_sqnr_db,
                    metric=first,
                    metric_drop=self.metric_drop(evaluation.metric),
                )
            )
        float_metric = None if self.float_metric is None else next(iter(self.float_metric.values()), None)
        return SensitivityReport(
            layers=sensitivity_order(layers, by_metric=self.metric is not None),
            dtype=self.config.dtype,
            mode=self.config.mode,
            metric_name=None if self.metric is None else next(iter(self.float_metric or {}), self.metric.name),
            metric_higher_is_better=True if self.metric is None else self.metric.higher_is_better,
            float_metric=float_metric,
            validation_samples=len(self.val_idx),
            calibration_samples=len(self.calib_idx),
            config=self.config.to_dict(),
            kept_float=list(self.kept_float),
        )


def analyze_sensitivity(
    model: nn.Module,
    config: QuantConfig | None = None,
    calibration: torch.Tensor | Iterable[Any] | None = None,
    *,
    metric: Callable[[nn.Module], Any] | None = None,
    progress: ProgressFn | None = None,
    cancel: CancelLike | None = None,
    on_phase: PhaseFn | None = None,
    evaluate_many: EvaluateMany | None = None,
) -> SensitivityReport:
    """For every selected layer, the output SQNR (and metric drop) with only that layer quantized.

    The samples are split as :func:`mono_quant_core.quantize` splits them
    (static mode calibrates on four of five and measures on the fifth; other
    modes measure on all, at most 32).  ``progress(done, total, message)``
    counts calibration samples, layers quantized and layers measured;
    ``on_phase`` gets a :class:`RunPlan` with the phases ``calibrate`` (static),
    ``quantize`` and ``sensitivity``.  ``cancel`` is checked between samples,
    also within a layer.  The caller's model is not changed.  ``evaluate_many`` runs the
    per-layer evaluations elsewhere (``mono_quant_core.cluster.sensitivity_on``), with the
    same results.
    """
    from .quantizer import _as_sequence

    config = config or QuantConfig()
    config.validate()
    samples = _as_sequence(calibration)
    if config.fold_batchnorm:  # as quantize() does: the figures describe the model it writes
        from .folding import fold_batchnorm

        model = fold_batchnorm(model).model
    bench = Workbench(
        model,
        config,
        samples,
        metric,
        lambda plan: Stepper(plan, progress, cancel, on_phase),
        timed=on_phase is not None,
    )
    report = bench.analyze(evaluate_many)
    evaluation = bench.evaluate({name: bench.quantized(name) for name in bench.names})
    report.all_quantized_output_sqnr_db = evaluation.output_sqnr_db
    report.elapsed_s = time.perf_counter() - bench.started
    return report
