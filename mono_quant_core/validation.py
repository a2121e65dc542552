"""Checks every run ends with: output and per-layer SQNR, a save → load → run
round trip, a weight-range check, and the ``on_failure`` policy."""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from .batches import call_model, sample_name
from .errors import ValidationFailed
from .loading.lazy_model import lazy_weights
from .outputs import SqnrAccumulator, flat_tensors
from .progress import Stepper
from .structure import get_submodule, model_device, shallow_clone

if TYPE_CHECKING:  # quantizer imports this module
    from .modules.base import QuantizedModule
    from .quantizer import QuantResult
    from .report import QuantReport


def record_skipped_calibration(report: QuantReport, samples: object) -> None:
    """Record in ``report`` the calibration files left out as unusable (``skipped_unusable``), with a warning."""
    found = getattr(samples, "skipped_unusable", ())
    skipped = [(getattr(path, "name", str(path)), str(reason)) for path, reason in found]
    report.calibration_skipped = [{"file": name, "reason": reason} for name, reason in skipped]
    if skipped:
        listed = "; ".join(f"{name}: {reason}" for name, reason in skipped[:5])
        more = f"; … and {len(skipped) - 5} more" if len(skipped) > 5 else ""
        n = len(skipped)
        report.warnings.append(
            f"left out {n} calibration file{'s' if n > 1 else ''} that cannot be used: {listed}{more}"
        )


def round_trip_twin(result: QuantResult, reference: nn.Module) -> nn.Module:
    """The quantized model rebuilt the way ``load_quantized`` rebuilds it from a file.

    The quantized layers' tensors go through the ``.safetensors`` writer and
    reader and the metadata through its JSON writer and parser; the model is
    then put together by the loader's own ``assemble`` on a clone of the float
    model.  Float tensors (which a file stores unchanged) are taken as they
    are, so the extra memory stays at one copy of the quantized layers.
    """
    from safetensors.torch import load

    from .serialization import safetensors_file
    from .serialization.file_tensors import file_tensors
    from .serialization.load import assemble
    from .serialization.metadata import METADATA_KEY, dumps
    from .serialization.read import parse
    from .serialization.save import build_metadata

    tensors, aliases = file_tensors(result.model)
    meta = build_metadata(result, aliases)
    prefixes = tuple(f"{record['name']}." for record in meta["layers"])
    if any(record["name"] == "" for record in meta["layers"]):
        prefixes = ("",)  # the whole model is one quantized layer
    quantized = {k: v for k, v in tensors.items() if k.startswith(prefixes)}
    header, ordered, _ = safetensors_file.layout(quantized, {METADATA_KEY: dumps(meta)})
    buffer = io.BytesIO()
    safetensors_file.write(buffer, header, ordered)
    loaded = {**{k: v for k, v in tensors.items() if k not in quantized}, **load(buffer.getvalue())}
    origin = "the float model (validation round trip)"
    return assemble(shallow_clone(reference), parse(dumps(meta), "<round trip>"), loaded, "<round trip>", origin)


def round_trip_by_layer(result: QuantResult, reference: nn.Module) -> bool:
    """The round trip of a model built without its float weights, one quantized layer at a time.

    Each layer's tensors go through the ``.safetensors`` writer and reader, and the layer is
    rebuilt from its record (``from_meta``, as ``load_quantized`` does) and must hold exactly
    the same state; the metadata goes through its JSON writer and parser once.  The extra memory
    is one layer's, not the whole quantized model's; what it does not check is a rebuilt
    model's outputs (the whole model is never assembled twice).
    """
    from safetensors.torch import load

    from .serialization import safetensors_file
    from .serialization.file_tensors import file_tensors
    from .serialization.load import replacement_class
    from .serialization.metadata import dumps, quant_meta_of
    from .serialization.read import parse
    from .serialization.save import build_metadata

    tensors, aliases = file_tensors(result.model)
    meta = parse(dumps(build_metadata(result, aliases)), "<round trip>")
    for alias, kept in meta["aliases"].items():
        tensors.setdefault(alias, tensors[kept])
    for record in meta["layers"]:
        name = record["name"]
        prefix = f"{name}." if name else ""
        part = {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}
        header, ordered, _ = safetensors_file.layout(part, {})
        buffer = io.BytesIO()
        safetensors_file.write(buffer, header, ordered)
        back = load(buffer.getvalue())
        rebuilt = replacement_class(record, "<round trip>").from_meta(
            quant_meta_of(record), get_submodule(reference, name)
        )
        rebuilt.load_state_dict(back, strict=True, assign=True)
        expected = get_submodule(result.model, name).state_dict()
        got = rebuilt.state_dict()
        if list(expected) != list(got) or not all(torch.equal(expected[k], got[k]) for k in expected):
            return False
    return True


def _outputs_equal(a: Any, b: Any) -> tuple[bool, float]:
    fa, fb = flat_tensors(a), flat_tensors(b)
    if len(fa) != len(fb):
        return False, float("inf")
    worst = 0.0
    for x, y in zip(fa, fb, strict=False):
        if x.shape != y.shape:
            return False, float("inf")
        if not torch.equal(x, y):
            worst = max(worst, float((x.double() - y.double()).abs().max()))
    return worst == 0.0, worst


def validate(
    result: QuantResult,
    reference: nn.Module,
    layer_modules: dict[str, QuantizedModule],
    samples: Sequence[Any],
    stepper: Stepper,
) -> None:
    """Fill the report's quality figures; failures go to ``report.failures``."""
    report, config = result.report, result.config
    problems = [f"{n}: {p}" for n, m in layer_modules.items() for p in m.weight_range_problems()]
    report.weight_range_valid = not problems
    if problems:
        report.failures.append("weight range check failed: " + "; ".join(problems[:5]))

    twin: nn.Module | None = None
    if lazy_weights(reference) is not None:  # never a second copy of a model larger than memory
        state_equal = round_trip_by_layer(result, reference)
    else:
        twin = round_trip_twin(result, reference)
        state_equal = all(
            torch.equal(a, b)
            for a, b in zip(result.model.state_dict().values(), twin.state_dict().values(), strict=False)
        ) and list(result.model.state_dict()) == list(twin.state_dict())
    stepper.step("checked the round trip through the file format")  # the phase's first unit

    device = model_device(reference)
    output_acc = SqnrAccumulator()
    layer_acc = {name: SqnrAccumulator() for name in layer_modules}
    handles: list[torch.utils.hooks.RemovableHandle] = []

    def layer_hooks(name: str) -> tuple[Callable[..., None], Callable[..., None]]:
        """A pre-hook run first, keeping the layer's arguments as called (the twin replaces the
        layer and its pre-hooks, such as SmoothQuant's input scale), and the hook comparing."""
        qmodule = layer_modules[name]
        called: list[tuple[tuple[Any, ...], dict[str, Any]]] = []

        def keep(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
            called.append((args, kwargs))

        def hook(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], output: Any) -> None:
            args, kwargs = called.pop() if called else (args, kwargs)
            approx = qmodule(*args, **kwargs)
            for ref, q in zip(flat_tensors(output), flat_tensors(approx), strict=False):
                layer_acc[name].add(ref, q)

        return keep, hook

    outputs_equal, worst = True, 0.0
    try:
        for name in layer_modules:
            if name:
                module = get_submodule(reference, name)
                keep, hook = layer_hooks(name)
                handles.append(module.register_forward_pre_hook(keep, prepend=True, with_kwargs=True))
                handles.append(module.register_forward_hook(hook, with_kwargs=True))
        with torch.inference_mode():
            for i in range(len(samples)):
                stepper.check()
                name = sample_name(samples, i, "validation")
                ref_out = call_model(reference, samples[i], device, name)
                q_out = call_model(result.model, samples[i], device, name, "the quantized model")
                for ref, q in zip(flat_tensors(ref_out), flat_tensors(q_out), strict=False):
                    output_acc.add(ref, q)
                if twin is not None:
                    twin_out = call_model(twin, samples[i], device, name, "the quantized model rebuilt from its file")
                    equal, diff = _outputs_equal(q_out, twin_out)
                    outputs_equal &= equal
                    worst = max(worst, diff)
                stepper.step(f"validating {i + 1}/{len(samples)}")
    finally:
        for h in handles:
            h.remove()
    del twin

    report.output_sqnr_db = output_acc.db()
    for layer in report.layers:  # the compute path each layer took in the validation forwards
        kernel = getattr(layer_modules.get(layer.name), "kernel", None)
        layer.kernel = None if kernel in (None, "pending") else kernel
    for layer in report.layers:
        if layer.name in layer_acc and layer.name:
            layer.output_sqnr_db = layer_acc[layer.name].db()
        elif layer.name == "":
            layer.output_sqnr_db = report.output_sqnr_db
    report.load_test_passed = state_equal and outputs_equal
    if not state_equal:
        report.failures.append("round trip: tensors differ after save → load")
    elif not outputs_equal:
        report.failures.append(f"round trip: outputs differ after save → load (max |diff| {worst:.3g})")
    if len(samples) == 0:
        report.warnings.append(
            "no validation samples: output SQNR was not measured (give calibration samples to measure it)"
        )
    threshold = config.warn_layer_sqnr_db
    for layer in report.layers:
        low = [v for v in (layer.weight_sqnr_db, layer.output_sqnr_db) if v is not None and v < threshold]
        if low:
            layer.status = "low-sqnr"
            report.warnings.append(f"{layer.name}: SQNR {min(low):.1f} dB is below {threshold:g} dB")


def _estimate_file_size(result: QuantResult) -> None:
    try:
        from .serialization import estimate_file_bytes
    except ImportError:  # serialization not available: leave the estimate empty
        return
    result.report.estimated_file_bytes = estimate_file_bytes(result)


def enforce(result: QuantResult) -> None:
    """Apply ``min_output_sqnr_db`` and ``on_failure`` to the collected failures."""
    report, config = result.report, result.config
    if config.min_output_sqnr_db is not None:
        if report.output_sqnr_db is None:
            report.failures.append(
                f"min_output_sqnr_db {config.min_output_sqnr_db:g} dB could not be checked: no validation samples"
            )
        elif report.output_sqnr_db < config.min_output_sqnr_db:
            report.failures.append(
                f"output SQNR {report.output_sqnr_db:.2f} dB is below min_output_sqnr_db "
                f"{config.min_output_sqnr_db:g} dB"
            )
    report.passed = not report.failures
    if not report.passed and config.on_failure == "warn":
        report.warnings.extend(f"check failed: {f}" for f in report.failures)
    _estimate_file_size(result)  # last: the report is final, so the estimate is exact
    if report.passed or config.on_failure != "error":
        return
    raise ValidationFailed("validation failed: " + "; ".join(report.failures), report, result)
