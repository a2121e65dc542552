"""Checks every run ends with: output and per-layer SQNR, a save → load → run
round trip, a weight-range check, and the ``on_failure`` policy.

What it costs (docs/architecture.md, "Validation"): the float model runs once
per validation sample and the quantized model once; each quantized layer's
output SQNR is measured in that same quantized pass, against the float layer's
output kept from the float pass of the same sample.  The round trip goes one
quantized layer at a time: its tensors through the ``.safetensors`` writer into
a reader that compares every byte at the header's offsets with the layer's own
(nothing is copied), the layer rebuilt from its parsed record (``from_meta``, as
``load_quantized`` does) and run on the inputs the layer saw in the first
:data:`ROUND_TRIP_SAMPLES` samples, bit for bit, sharing the layer's packed
kernel.  On a model built lazily (larger than memory) each layer's packed kernel
(a copy of its codes) is dropped after its call, so the packs never add up to a
second quantized model; in memory they are kept for the user's own forwards.
"""

from __future__ import annotations

import contextlib
import json
import struct
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, BinaryIO, cast

import torch
from torch import nn

from .batches import call_model, sample_name
from .errors import QuantizedFileError, ValidationFailed
from .outputs import SqnrAccumulator, flat_tensors
from .progress import Stepper
from .structure import get_submodule, model_device

if TYPE_CHECKING:  # quantizer imports this module
    from .modules.base import QuantizedModule
    from .quantizer import QuantResult
    from .report import QuantReport

#: The save → load → run round trip runs on at most this many validation samples.
ROUND_TRIP_SAMPLES = 2
#: A layer output larger than this keeps every k-th value (k odd) as its float reference:
#: the per-layer output SQNR of a large feature map is estimated on about this many values.
REFERENCE_VALUES = 1 << 16
#: Float layer outputs kept over many samples at once (the fallback's sensitivity pass): values in all.
REFERENCE_BUDGET = 1 << 24
#: What the round trip names as the file it reads.
ROUND_TRIP = "<round trip>"


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


# -- float references ----------------------------------------------------------------------


def _stride(numel: int, limit: int = REFERENCE_VALUES) -> int:
    """Every how many values a layer output of ``numel`` values is kept (odd: no aliasing on even sizes)."""
    if numel <= limit:
        return 1
    return (numel // limit) | 1


def references_limit(samples: int, layers: int) -> int:
    """Values kept per layer output when ``samples`` samples of ``layers`` layers are kept together."""
    return max(4096, min(REFERENCE_VALUES, REFERENCE_BUDGET // max(1, samples * layers)))


#: One call's float outputs of a layer: ``(numel, stride, kept values)`` per output tensor.
CallReference = list[tuple[int, int, torch.Tensor]]


@dataclass
class FloatReferences:
    """The float model's outputs on validation samples, computed once and reused (the automatic
    fallback's sensitivity pass hands them to the final validation): the outputs, and per sample
    the quantized layers' float outputs by name, in call order."""

    outputs: list[list[torch.Tensor]]
    layers: list[dict[str, list[CallReference]]]


class LayerReferences:
    """The float outputs of the quantized layers on one sample, in call order, recorded by hooks.

    ``record(reference)`` hooks the float model; ``add`` compares a quantized layer's output of its
    next call with the float output of the same call.  ``limit``: values kept per output tensor.
    """

    def __init__(self, names: Sequence[str], limit: int = REFERENCE_VALUES) -> None:
        self.names = [n for n in names if n]  # "" (the whole model) is the output SQNR itself
        self.limit = limit
        self.calls: dict[str, list[CallReference]] = {n: [] for n in self.names}
        self._seen: dict[str, int] = dict.fromkeys(self.names, 0)

    def clear(self) -> None:
        self.use({})

    def use(self, calls: dict[str, list[CallReference]]) -> None:
        """Compare the next quantized pass against ``calls`` (one sample's recorded float outputs)."""
        self.calls = {n: calls.get(n, []) for n in self.names}
        self._seen = dict.fromkeys(self.names, 0)

    def record(self, model: nn.Module) -> list[torch.utils.hooks.RemovableHandle]:
        def hook(name: str) -> Callable[..., None]:
            def keep(module: nn.Module, args: Any, output: Any) -> None:
                kept = []
                for t in flat_tensors(output):
                    flat = t.detach().reshape(-1)
                    step = _stride(flat.numel(), self.limit)
                    # A copy: the model's later in-place ops (ReLU(inplace=True)) must not change it.
                    kept.append((flat.numel(), step, flat.clone() if step == 1 else flat[::step].clone()))
                self.calls[name].append(kept)

            return keep

        return [get_submodule(model, n).register_forward_hook(hook(n)) for n in self.names]

    def add(self, name: str, output: Any, acc: SqnrAccumulator) -> None:
        """Add the quantized layer's output of its next call against the float one."""
        k = self._seen[name]
        self._seen[name] = k + 1
        if k >= len(self.calls[name]):
            return  # the quantized model called it more often than the float one did
        for (numel, step, ref), q in zip(self.calls[name][k], flat_tensors(output), strict=False):
            if q.numel() == numel:
                acc.add(ref, q.detach().reshape(-1)[::step])


# -- the file round trip, one layer at a time ---------------------------------------------------


def _as_bytes(view: memoryview) -> torch.Tensor:
    """``view``'s bytes as a uint8 tensor, without a copy."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a read-only buffer (bytes): only read here
        return torch.frombuffer(view, dtype=torch.uint8)


class _StreamCheck:
    """A write-only file for ``safetensors_file.write`` that reads what is written as a loader would.

    The header is parsed and checked (``check_entries``) when complete; every data byte is compared,
    as it arrives, with the byte of the layer's own tensor at that offset.  Nothing is copied.
    """

    def __init__(self, tensors: dict[str, torch.Tensor]) -> None:
        self.tensors = tensors
        self.head = bytearray()
        self.spans: list[tuple[int, int, str]] | None = None
        self.data_bytes = -1
        self.at = 0
        self.problems: list[str] = []
        self._flat: dict[str, torch.Tensor] = {}

    def write(self, data: Any) -> int:
        view = memoryview(data).cast("B")
        used = 0
        if self.spans is None:
            used = self._header(view)
        if self.spans is not None and used < len(view):
            self._data(view[used:])
        return len(view)

    def _header(self, view: memoryview) -> int:
        used = 0
        while self.spans is None and used < len(view):
            need = 8 if len(self.head) < 8 else 8 + struct.unpack("<Q", bytes(self.head[:8]))[0]
            take = min(need - len(self.head), len(view) - used)
            self.head += view[used : used + take]
            used += take
            if len(self.head) >= 8 and len(self.head) == 8 + struct.unpack("<Q", bytes(self.head[:8]))[0]:
                self._parse()
        return used

    def _parse(self) -> None:
        from .serialization.safetensors_file import check_entries, dtype_code

        self.spans = []
        try:
            header = json.loads(bytes(self.head[8:]).decode("utf-8"))
            if not isinstance(header, dict):
                raise QuantizedFileError("the header is not a JSON object")
            self.data_bytes = check_entries(header, ROUND_TRIP)
        except (QuantizedFileError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            self.problems.append(f"the header does not read back ({exc})")
            return
        entries = {k: v for k, v in header.items() if k != "__metadata__"}
        if set(entries) != set(self.tensors):
            self.problems.append(f"the header lists {sorted(entries)}, the layer has {sorted(self.tensors)}")
            return
        for name, t in self.tensors.items():
            info = entries[name]
            if info["dtype"] != dtype_code(name, t) or list(info["shape"]) != list(t.shape):
                self.problems.append(f"{name}: the header says {info['dtype']} {info['shape']}")
            else:
                self.spans.append((*info["data_offsets"], name))

    def _data(self, view: memoryview) -> None:
        start, self.at = self.at, self.at + len(view)
        for begin, end, name in self.spans or ():
            lo, hi = max(begin, start), min(end, self.at)
            if lo < hi and not torch.equal(
                _as_bytes(view[lo - start : hi - start]), self._bytes(name)[lo - begin : hi - begin]
            ):
                self.problems.append(f"{name}: the bytes read back differ")

    def _bytes(self, name: str) -> torch.Tensor:
        """The layer's own tensor ``name`` as its bytes (a view)."""
        if name not in self._flat:
            self._flat[name] = self.tensors[name].detach().contiguous().reshape(-1).view(torch.uint8)
        return self._flat[name]

    def finish(self) -> list[str]:
        if self.spans is None:
            self.problems.append("the file ends inside its header")
        elif not self.problems and self.at != self.data_bytes:
            self.problems.append(f"the data section has {self.at} bytes, the header describes {self.data_bytes}")
        return sorted(set(self.problems))


class RoundTrip:
    """The save → load → run round trip of a quantized model, one quantized layer at a time.

    The metadata goes through its JSON writer and parser once; each layer's tensors through the
    ``.safetensors`` writer into :class:`_StreamCheck`; each layer is rebuilt from its parsed record
    by the loader's own classes (``from_meta``, ``restore_notes``, ``load_state_dict``) and must hold
    the same state.  Rebuilt layers share the checked tensors (bit-identical to the file's bytes)
    and the kernel the in-memory layer packed, so the extra memory is a layer's modules, not a copy
    of its weights.  ``run`` compares a rebuilt layer's outputs with the in-memory layer's.
    """

    def __init__(self, result: QuantResult, reference: nn.Module) -> None:
        from .serialization import safetensors_file
        from .serialization.file_tensors import file_tensors
        from .serialization.metadata import dumps
        from .serialization.read import parse
        from .serialization.save import build_metadata

        self.result, self.reference = result, reference
        self.state_problems: list[str] = []
        self.output_problems: list[str] = []
        self.worst = 0.0
        self.ran: set[str] = set()
        tensors, aliases = file_tensors(result.model)
        self.meta = parse(dumps(build_metadata(result, aliases, with_source=False)), ROUND_TRIP)
        for alias, kept in self.meta["aliases"].items():
            tensors.setdefault(alias, tensors[kept])
        self.records = {record["name"]: record for record in self.meta["layers"]}
        for name in self.records:
            prefix = f"{name}." if name else ""
            part = {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}
            header, ordered, _ = safetensors_file.layout(part, {})
            sink = _StreamCheck(part)
            safetensors_file.write(cast(BinaryIO, sink), header, ordered)
            self.state_problems.extend(f"{name or '(model)'}: {p}" for p in sink.finish())
        del tensors

    def rebuilt(self, name: str) -> nn.Module | None:
        """Layer ``name`` rebuilt from its record; None (and a problem noted) when it differs."""
        from .modules.base import QuantizedModule, layout_only
        from .serialization.load import replacement_class
        from .serialization.metadata import quant_meta_of

        record = self.records[name]
        label = name or "(model)"
        original = get_submodule(self.result.model, name)
        meta = quant_meta_of(record)
        rebuilt = replacement_class(record, ROUND_TRIP).from_meta(meta, get_submodule(self.reference, name))
        rebuilt.restore_notes(meta)
        # A single quantized layer's codes that only its packed kernel holds come as placeholders
        # of their shape: the file's bytes were checked against them before any pack
        # (``_StreamCheck``), the rebuilt layer computes with that same pack (below), and
        # unpacking them here would hold one more copy of the layer at the peak.  A layer made of
        # quantized children (attention) packs and reads its children itself: real codes.
        packed = isinstance(original, QuantizedModule) and original._kernel_key == original._state_key()
        single = packed and not any(isinstance(m, QuantizedModule) for m in original.modules() if m is not original)
        with layout_only() if single else contextlib.nullcontext():
            expected = original.state_dict()
        layout = {k: (v.shape, v.dtype) for k, v in rebuilt.state_dict().items()}
        if layout != {k: (v.shape, v.dtype) for k, v in expected.items()}:
            self.state_problems.append(f"{label}: its record rebuilds other tensors ({sorted(layout)})")
            return None
        rebuilt.load_state_dict(expected, strict=True, assign=True)
        got = rebuilt.state_dict()
        if list(got) != list(expected) or not all(torch.equal(expected[k], got[k]) for k in expected):
            self.state_problems.append(f"{label}: tensors differ after save → load")
            return None
        if packed and isinstance(original, QuantizedModule):
            # The same tensors (checked above): the same packed kernel, valid for the rebuilt
            # layer's tensors (the original's may be held by its pack alone: another key).
            rebuilt._kernel_key, rebuilt._kernel_state = rebuilt._state_key(), original._kernel_state
            rebuilt.kernel = original.kernel
        return rebuilt.eval()

    def run(self, name: str, args: tuple[Any, ...], kwargs: dict[str, Any], output: Any) -> None:
        """Run the rebuilt layer ``name`` on the arguments the in-memory layer was called with."""
        self.ran.add(name)
        rebuilt = self.rebuilt(name)
        if rebuilt is None:
            return
        equal, diff = _outputs_equal(output, rebuilt(*args, **kwargs))
        if not equal:
            self.output_problems.append(name or "(model)")
            self.worst = max(self.worst, diff)

    @property
    def passed(self) -> bool:
        return not self.state_problems and not self.output_problems

    def failures(self) -> list[str]:
        if self.state_problems:
            return ["round trip: tensors differ after save → load (" + "; ".join(self.state_problems[:5]) + ")"]
        if self.output_problems:
            return [
                f"round trip: outputs differ after save → load (max |diff| {self.worst:.3g}; "
                + ", ".join(self.output_problems[:5])
                + ")"
            ]
        return []


def round_trip_by_layer(result: QuantResult, reference: nn.Module) -> bool:
    """Whether every quantized layer's tensors and rebuilt state survive the round trip (no run)."""
    check = RoundTrip(result, reference)
    for name in check.records:
        check.rebuilt(name)
    return not check.state_problems


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


# -- the validation passes -----------------------------------------------------------------------


class _QuantizedHooks:
    """Hooks on the quantized model's layers: per-layer SQNR and, while ``round_trip`` is set, the round trip."""

    def __init__(
        self, model: nn.Module, refs: LayerReferences, layer_acc: dict[str, SqnrAccumulator], check: RoundTrip
    ) -> None:
        self.refs, self.layer_acc, self.check = refs, layer_acc, check
        self.round_trip = False
        #: Release each layer's packed kernel after its call (a model built lazily: larger than memory).
        self.release = False
        self._done: set[str] = set()
        self._called: dict[str, list[tuple[tuple[Any, ...], dict[str, Any]]]] = {}
        self.handles: list[torch.utils.hooks.RemovableHandle] = []
        for name in sorted(set(refs.names) | set(check.records)):
            module = get_submodule(model, name)
            self.handles.append(module.register_forward_pre_hook(self._keep(name), with_kwargs=True))
            self.handles.append(module.register_forward_hook(self._compare(name), with_kwargs=True))

    def next_sample(self, round_trip: bool) -> None:
        self.round_trip = round_trip
        self._done.clear()
        self._called.clear()

    def _keep(self, name: str) -> Callable[..., None]:
        def keep(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
            if self.round_trip and name in self.check.records and name not in self._done:
                self._called.setdefault(name, []).append((args, kwargs))

        return keep

    def _compare(self, name: str) -> Callable[..., None]:
        def compare(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], output: Any) -> None:
            if name in self.layer_acc:
                self.refs.add(name, output, self.layer_acc[name])
            called = self._called.get(name)
            if called:
                args, kwargs = called.pop()
                self._done.add(name)
                self._called.pop(name, None)
                self.check.run(name, args, kwargs, output)
            release = getattr(module, "release_kernel", None) if self.release else None
            if callable(release):
                release()

        return compare

    def remove(self) -> None:
        for h in self.handles:
            h.remove()


def validate(
    result: QuantResult,
    reference: nn.Module,
    layer_modules: dict[str, QuantizedModule],
    samples: Sequence[Any],
    stepper: Stepper,
    references: FloatReferences | None = None,
) -> None:
    """Fill the report's quality figures; failures go to ``report.failures``.

    Each sample runs the float model once (its output and the quantized layers' float outputs
    kept) and the quantized model once (output SQNR and every layer's output SQNR); the first
    :data:`ROUND_TRIP_SAMPLES` samples also run each layer rebuilt from the file format.
    ``references``: the float outputs on these samples already computed (the float model then
    does not run at all).
    """
    report, config = result.report, result.config
    problems = [f"{n}: {p}" for n, m in layer_modules.items() for p in m.weight_range_problems()]
    report.weight_range_valid = not problems
    if problems:
        report.failures.append("weight range check failed: " + "; ".join(problems[:5]))

    check = RoundTrip(result, reference)
    stepper.step("checked the round trip through the file format")  # the phase's first unit

    device = model_device(reference)
    output_acc = SqnrAccumulator()
    layer_acc = {name: SqnrAccumulator() for name in layer_modules if name}
    refs = LayerReferences(list(layer_acc))
    if references is not None and len(references.outputs) != len(samples):
        references = None  # computed on other samples: not these figures
    handles = refs.record(reference) if references is None else []
    hooks = _QuantizedHooks(result.model, refs, layer_acc, check)
    # A model too large for memory: the kernels' packs (a copy of each layer's codes) would add
    # up to a second quantized model over the pass; each is dropped after its layer ran.
    from .loading.lazy_model import lazy_weights

    hooks.release = lazy_weights(reference) is not None
    round_trip_samples = 0
    try:
        with torch.inference_mode():
            for i in range(len(samples)):
                stepper.check()
                name = sample_name(samples, i, "validation")
                if references is None:
                    refs.clear()
                    ref_out = flat_tensors(call_model(reference, samples[i], device, name))
                else:
                    refs.use(references.layers[i])
                    ref_out = references.outputs[i]
                hooks.next_sample(round_trip=i < ROUND_TRIP_SAMPLES)
                q_out = call_model(result.model, samples[i], device, name, "the quantized model")
                round_trip_samples += int(i < ROUND_TRIP_SAMPLES)
                for ref, q in zip(ref_out, flat_tensors(q_out), strict=False):
                    output_acc.add(ref, q)
                del ref_out, q_out
                stepper.step(f"validating {i + 1}/{len(samples)}")
    finally:
        hooks.remove()
        for h in handles:
            h.remove()
        refs.clear()
    for name in check.records:
        if name not in check.ran:  # never called on the samples (or none given): its state still counts
            check.rebuilt(name)

    report.output_sqnr_db = output_acc.db()
    report.round_trip_samples = round_trip_samples
    for layer in report.layers:  # the compute path each layer took in the validation forwards
        kernel = getattr(layer_modules.get(layer.name), "kernel", None)
        layer.kernel = None if kernel in (None, "pending") else kernel
    for layer in report.layers:
        if layer.name in layer_acc:
            layer.output_sqnr_db = layer_acc[layer.name].db()
        elif layer.name == "":
            layer.output_sqnr_db = report.output_sqnr_db
    report.load_test_passed = check.passed
    report.failures.extend(check.failures())
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
