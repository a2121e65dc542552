"""Automatic fallback to a target: keep the fewest layers float (or wider) that reach it.

With ``QuantConfig.target_output_sqnr_db`` and/or ``target_metric_drop`` set,
:func:`mono_quant_core.quantize` comes here.  The layers are ranked by
sensitivity (each quantized alone), then the search widens them in that order:
a *move* takes one layer one rung up the ladder (``fallback = "float"``: to
float; ``fallback = "int8"``: first to int8 for every layer in rank order, then
to float).  The fewest moves that reach the target are found by doubling and
then bisecting over the number of moves, each candidate measured on the
validation samples; the chosen configuration is then verified with a full run
(validation, round trip and metric included).  The configuration with every
layer float is no quantization and is never chosen: when only it would reach
the target, the closest configuration found is returned, with a warning that
says how close it came.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from torch import nn

from .config import FLOAT, QuantConfig
from .progress import CancelLike, PhaseFn, PhasePlan, ProgressFn, Stepper
from .report import LayerReport, format_db
from .sensitivity import MAX_SAMPLES as SENSITIVITY_SAMPLES
from .sensitivity import Evaluation, SensitivityReport, Workbench


@dataclass(frozen=True)
class Move:
    """Layer ``name`` goes to ``to`` (a dtype, or ``float``)."""

    name: str
    to: str


def ladder(config: QuantConfig, layer_dtype: str) -> list[str]:
    """The rungs a layer of ``layer_dtype`` climbs: ``[fallback, float]`` or ``[float]``."""
    from .config import DTYPE_BITS

    if config.fallback != FLOAT and DTYPE_BITS[config.fallback] > DTYPE_BITS[layer_dtype]:
        return [config.fallback, FLOAT]
    return [FLOAT]


def search_units(moves: int) -> int:
    """An upper bound of the candidates the search measures for ``moves`` possible moves."""
    return 2 * math.ceil(math.log2(moves + 1)) + 2 if moves else 1


class _Search:
    def __init__(self, bench: Workbench, config: QuantConfig, ranking: list[str], stepper: Stepper) -> None:
        self.bench, self.config, self.stepper = bench, config, stepper
        rungs = {name: ladder(config, bench.layer_config(name).dtype) for name in ranking}
        depth = max((len(r) for r in rungs.values()), default=0)
        self.moves = [
            Move(name, rungs[name][level]) for level in range(depth) for name in ranking if level < len(rungs[name])
        ]
        if self.moves and self.moves[-1].to == FLOAT and all(len(rungs[n]) for n in ranking):
            self.moves = self.moves[:-1]  # every layer float is no quantization
        self.tried: dict[int, Evaluation] = {}

    def state(self, m: int) -> dict[str, str]:
        """Each widened layer's dtype after the first ``m`` moves."""
        widened: dict[str, str] = {}
        for move in self.moves[:m]:
            widened[move.name] = move.to
        return widened

    def measure(self, m: int) -> Evaluation:
        if m not in self.tried:
            widened = self.state(m)
            assignment = {}
            for name in self.bench.names:
                to = widened.get(name)
                if to != FLOAT:
                    assignment[name] = self.bench.quantized(name, to)
            self.tried[m] = self.bench.evaluate(assignment)
            self.stepper.step(f"tried {len(widened)} layers widened")
        return self.tried[m]

    def reaches(self, evaluation: Evaluation) -> bool:
        target, drop_target = self.config.target_output_sqnr_db, self.config.target_metric_drop
        if target is not None and (evaluation.output_sqnr_db is None or evaluation.output_sqnr_db < target):
            return False
        if drop_target is not None:
            drop = self.bench.metric_drop(evaluation.metric)
            if drop is None or drop > drop_target:
                return False
        return True

    def shortfall(self, evaluation: Evaluation) -> float:
        """How far from the target (0: reached), in units that compare candidates of one run."""
        short = 0.0
        if self.config.target_output_sqnr_db is not None:
            db = evaluation.output_sqnr_db
            short += math.inf if db is None else max(0.0, self.config.target_output_sqnr_db - db)
        if self.config.target_metric_drop is not None:
            drop = self.bench.metric_drop(evaluation.metric)
            short += math.inf if drop is None else max(0.0, drop - self.config.target_metric_drop) * 1000.0
        return short

    def run(self) -> tuple[int, bool]:
        """The fewest moves that reach the target, and whether it was reached (else the closest tried)."""
        if self.reaches(self.measure(0)):
            return 0, True
        low, high = 0, None  # low fails; high reaches
        step = 1
        while high is None:
            m = min(low + step, len(self.moves))
            if self.reaches(self.measure(m)):
                high = m
            elif m == len(self.moves):
                break
            else:
                low, step = m, step * 2
        if high is None:
            best = min(self.tried, key=lambda k: (self.shortfall(self.tried[k]), k))
            return best, False
        while high - low > 1:
            mid = (low + high) // 2
            if self.reaches(self.measure(mid)):
                high = mid
            else:
                low = mid
        return high, True


def quantize_to_target(
    model: nn.Module,
    config: QuantConfig,
    samples: Sequence[Any],
    *,
    metric: Callable[[nn.Module], Any] | None,
    progress: ProgressFn | None,
    cancel: CancelLike | None,
    on_layer: Callable[[LayerReport], None] | None,
    on_phase: PhaseFn | None,
    validate: bool,
    source: dict[str, Any] | None,
) -> Any:
    """:func:`mono_quant_core.quantize` with ``target_output_sqnr_db`` / ``target_metric_drop``."""
    from .errors import ConfigError
    from .quantizer import Prepared, run_quantize

    if config.target_metric_drop is not None and metric is None:
        raise ConfigError(
            "target_metric_drop needs a task metric: define evaluate(model) in the model script "
            "(or name another with --metric), or pass metric= to quantize",
            key="target_metric_drop",
        )
    if not validate:
        raise ConfigError("a target accuracy needs validation (validate=True)", key="target_output_sqnr_db")

    def extra(layers: int, pass_s: float) -> tuple[PhasePlan, ...]:
        from .quantizer import VALIDATE_FORWARDS, validate_plan

        per_sample = pass_s / max(len(bench_val_guess), 1)
        phases = [PhasePlan("search", search_units(layers * 2), pass_s)]
        phases.append(validate_plan(len(bench_val_guess), VALIDATE_FORWARDS * per_sample))
        if metric is not None:
            phases.append(PhasePlan("metric", 2))
        return tuple(phases)

    from .quantizer import any_static, layer_configs, split_samples
    from .selection import select_layers

    chosen = select_layers(model, config).chosen
    static = any_static(layer_configs(model, config, chosen))
    _, bench_val_guess, _ = split_samples(len(samples), static, SENSITIVITY_SAMPLES)

    bench = Workbench(
        model,
        config,
        samples,
        metric,
        lambda plan: Stepper(plan, progress, cancel, on_phase),
        extra_phases=extra,
        timed=on_phase is not None,
    )
    sensitivity = bench.analyze()
    ranking = sensitivity.ranking()
    bench.stepper.begin("search", "finding the fewest layers to keep")
    search = _Search(bench, config, ranking, bench.stepper)
    moves, reached = search.run()
    planned = bench.stepper.plan.units("search")
    done = bench.stepper.done - bench.stepper._phase_start
    if done < planned:
        bench.stepper.step("search done", n=planned - done)
    widened = search.state(moves)

    overrides = {pattern: dict(fields) for pattern, fields in config.layer_overrides.items()}
    for name, to in widened.items():
        overrides[name] = {**overrides.get(name, {}), "dtype": to}
    final_config = config.replace(
        layer_overrides=overrides, target_output_sqnr_db=None, target_metric_drop=None, fallback=FLOAT
    )
    modules = {}
    for name in bench.names:
        rung = widened.get(name)
        if rung != FLOAT:
            modules[name] = bench.quantized(name, rung)
    prepared = Prepared(bench.stepper, bench.qparams, modules, bench.float_metric)
    result = run_quantize(
        model,
        final_config,
        samples,
        progress=progress,
        cancel=cancel,
        on_layer=on_layer,
        on_phase=on_phase,
        validate=False,
        source=source,
        metric=None,
        prepared=prepared,
    )
    # The full check, as a run without a target would do it, on the chosen configuration.
    _finish(result, model, final_config, samples, bench, metric, config, sensitivity, search, moves, reached)
    return result


def _finish(
    result: Any,
    model: nn.Module,
    final_config: QuantConfig,
    samples: Sequence[Any],
    bench: Workbench,
    metric: Any,
    config: QuantConfig,
    sensitivity: SensitivityReport,
    search: _Search,
    moves: int,
    reached: bool,
) -> None:
    from . import validation
    from .quantizer import _Subset, metric_entries, skipped_validation_samples

    report = result.report
    layer_modules = {name: bench.quantized(name, to) for name, to in _quantized_dtypes(bench, search, moves).items()}
    report.warnings.extend(w for w in bench.report.warnings if w not in report.warnings)
    from .validation import FloatReferences

    # The float outputs of the sensitivity pass are these samples' (the first of them: the
    # validation budget of the config).
    val_idx = bench.val_idx[: result.config.validation_samples]
    references = bench.float_references
    if references is not None:
        references = FloatReferences(references.outputs[: len(val_idx)], references.layers[: len(val_idx)])
    bench.stepper.begin("validate", f"validating on {len(val_idx)} samples")
    validation.validate(result, bench.reference, layer_modules, _Subset(samples, val_idx), bench.stepper, references)
    report.validation_samples = len(val_idx)
    skipped = skipped_validation_samples(len(samples), bench.calib_idx, val_idx, bench.overlap)
    report.validation_samples_skipped = skipped
    if bench.metric is not None:
        bench.stepper.begin("metric", f"measuring {bench.metric.name}")
        float_values = bench.float_metric or bench.metric.evaluate(bench.reference, "on the float model")
        bench.stepper.step(f"{bench.metric.name} of the float model")
        quantized_values = bench.metric.evaluate(result.model, "on the quantized model")
        bench.stepper.step(f"{bench.metric.name} of the quantized model")
        report.metrics = metric_entries(float_values, quantized_values, bench.metric.higher_is_better)
    else:
        quantized_values = None

    by_name = {layer.name: layer for layer in sensitivity.layers}
    widened = search.state(moves)
    for name, to in widened.items():
        layer = by_name[name]
        why = (
            f"rank {layer.rank} of {len(sensitivity.layers)} by sensitivity: "
            f"alone it gives output SQNR {format_db(layer.output_sqnr_db)}"
        )
        if layer.metric_drop is not None:
            why += f", metric drop {layer.metric_drop:.4g}"
        report.kept_for_accuracy.append({"name": name, "from": bench.layer_config(name).dtype, "to": to, "reason": why})
    report.sensitivity = list(sensitivity.to_dict()["layers"])
    final = Evaluation(report.output_sqnr_db, quantized_values)
    achieved_drop = bench.metric_drop(quantized_values)
    verified = search.reaches(final)
    report.accuracy_target = {
        "output_sqnr_db": config.target_output_sqnr_db,
        "metric_drop": config.target_metric_drop,
        "fallback": config.fallback,
        "reached": bool(reached and verified),
        "achieved_output_sqnr_db": report.output_sqnr_db,
        "achieved_metric_drop": achieved_drop,
        "evaluations": len(search.tried),
    }
    # The user's config (with its target) is the one to record: a job file of it runs the same search.
    report.config = config.to_dict()
    result.config = config
    if not (reached and verified):
        report.warnings.append(
            _short_of_target(config, report.output_sqnr_db, achieved_drop, len(widened), len(bench.names))
        )
    report.elapsed_s = _elapsed(bench)
    validation.enforce(result)


def _quantized_dtypes(bench: Workbench, search: _Search, moves: int) -> dict[str, str | None]:
    widened = search.state(moves)
    return {name: widened.get(name) for name in bench.names if widened.get(name) != FLOAT}


def _short_of_target(config: QuantConfig, sqnr: float | None, drop: float | None, kept: int, total: int) -> str:
    parts = []
    if config.target_output_sqnr_db is not None:
        parts.append(f"output SQNR {format_db(sqnr)} of the target {config.target_output_sqnr_db:g} dB")
    if config.target_metric_drop is not None:
        shown = "—" if drop is None else f"{drop:.4g}"
        parts.append(f"metric drop {shown} against the allowed {config.target_metric_drop:g}")
    return (
        f"target not reached: the closest found is {' and '.join(parts)}, with {kept} of {total} layers "
        "kept float or widened (keeping every layer float is no quantization)"
    )


def _elapsed(bench: Workbench) -> float:
    import time

    return time.perf_counter() - bench.started
