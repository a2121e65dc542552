"""ONNX QDQ export: a quantized model as an ONNX graph that ONNX Runtime (and other QDQ runtimes) run.

Every quantized weight is an integer initializer followed by ``DequantizeLinear``:

- int8 per-channel: INT8 codes, float32 scales (and INT8 zero points when
  asymmetric) per axis along the output channel (axis 0; 1 for a transposed
  convolution), opset ≥ 13; per-tensor: scalar scale and zero point;
- int4 (and int8) per-group: blocked ``DequantizeLinear`` (opset 21,
  ``axis=1``, ``block_size`` = the group size) on the weight flattened to
  ``[rows, fan_in]`` — mono-quant's group layout — then ``Reshape``; int4
  codes are INT4 (symmetric) or UINT4 with UINT4 zero points (asymmetric);
- fp16 / bf16 casts: FLOAT16 / BFLOAT16 initializers and a ``Cast`` to float.

Activations follow each layer's mode: static layers quantize their input with
``QuantizeLinear``/``DequantizeLinear`` at the calibrated int8 scale and zero
point; dynamic layers with ``DynamicQuantizeLinear`` (uint8 on the tensor's
own min/max range: mono-quant's int8 grid shifted by 128) then
``DequantizeLinear``, so the runtime rounds the activations as mono-quant's
dynamic mode does; weight-only layers take the input as is.  A layer with
stored SmoothQuant factors divides its input by them (``Div``) first.

Exporter: torch's TorchScript exporter (``torch.onnx.export(dynamo=False)``)
with ``do_constant_folding=False``.  Each quantized layer is swapped, in a
structural copy of the model that shares its tensors, for an export twin
(:mod:`.twins`) that computes the same function through autograd Functions
with a ``symbolic`` (:mod:`.qdq_ops`): the exporter writes exactly the QDQ
nodes that ``symbolic`` says, and module buffers become initializers of their
own dtype under their module names.  The dynamo exporter would need each
pattern as a registered custom op plus an onnxscript translation, and its
optimizer is free to fold or rename the initializers; the TorchScript path
traces the attention code of ``QuantizedMultiheadAttention`` as it is.  The
TorchScript exporter writes opset ≤ 20: a graph that needs opset 21 (blocked
and 4-bit ``DequantizeLinear``) is exported at 20 and its opset raised to 21.
That keeps the meaning of every operator the exporter emits: their 21
versions only add types (int4, float8) and, for ``QuantizeLinear`` /
``DequantizeLinear``, ``block_size``; ``GroupNormalization``, the one
operator whose meaning changed in 21, is never emitted (and refused if seen).

Layers without an ONNX form (quantized LSTM / GRU) raise :class:`ExportError`
naming them: nothing quantized is ever exported as float.
"""

from __future__ import annotations

import copy
import inspect
import io
import itertools
import os
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar, cast

import torch
from torch import nn

from ..batches import as_call_args
from ..errors import ExportError, MonoQuantError
from ..modules.attention import QuantizedMultiheadAttention
from ..modules.base import QuantizedModule
from ..serialization.atomic import atomic_write
from .twins import ExportWeight, twin_for

#: Opset of a graph with only per-tensor / per-channel int8 and casts (QDQ runtimes widely read it).
DEFAULT_OPSET = 17
#: Blocked (per-group) ``DequantizeLinear`` and INT4 / UINT4 tensors.
BLOCKED_OPSET = 21
MIN_OPSET = 13  # per-axis DequantizeLinear
MAX_OPSET = 21
#: The highest opset torch's TorchScript exporter writes.
TORCHSCRIPT_MAX_OPSET = 20
#: Protobuf's limit on one serialized message: larger models need external data.
PROTOBUF_LIMIT = 2**31 - 1
_WRAPPED = "model."
T = TypeVar("T")


@dataclass(frozen=True)
class OnnxExport:
    """What :func:`export_onnx` wrote."""

    path: str
    opset: int
    input_names: list[str]
    output_names: list[str]
    file_bytes: int
    #: Bytes of the initializers' data (the stored weights, scales, zero points, float tensors).
    initializer_bytes: int
    #: The rest of the file: nodes, names, types.
    graph_bytes: int
    #: ``QuantizeLinear`` + ``DynamicQuantizeLinear`` nodes (activation quantization).
    quantize_nodes: int
    #: ``DequantizeLinear`` nodes (one per quantized weight, one per quantized activation).
    dequantize_nodes: int
    #: Qualified names of the quantized layers in the graph.
    layers: list[str] = field(default_factory=list)
    exporter: str = "torch.onnx.export (TorchScript, dynamo=False)"


def _onnx() -> Any:
    try:
        import onnx
    except ImportError:
        raise ExportError(
            "ONNX export needs the onnx package: install the export extra (pip install 'mono-quant[export]')"
        ) from None
    return onnx


def _model_of(qmodel_or_result: Any) -> nn.Module:
    model = getattr(qmodel_or_result, "model", qmodel_or_result)
    if not isinstance(model, nn.Module):
        raise ExportError(f"export_onnx: expected a QuantResult or a quantized nn.Module, got {type(model).__name__}")
    return model


def _quantized_layers(model: nn.Module) -> dict[str, QuantizedModule]:
    """The quantized layers to swap for twins (an attention's projections, not the attention itself)."""
    layers = {n: m for n, m in model.named_modules() if isinstance(m, QuantizedModule)}
    return {n: m for n, m in layers.items() if not isinstance(m, QuantizedMultiheadAttention)}


def _check_layers(layers: dict[str, QuantizedModule]) -> None:
    if not layers:
        raise ExportError("export_onnx: the model has no quantized layers (quantize it first)")
    unsupported = [f"{n or '(the model)'} ({type(m).__name__})" for n, m in layers.items() if twin_for(m) is None]
    if unsupported:
        raise ExportError(
            "ONNX export: these quantized layers have no ONNX QDQ form (keep them float, e.g. "
            f"exclude_types=['LSTM', 'GRU'], and quantize again): {', '.join(unsupported)}",
            [u.split(" (")[0] for u in unsupported],
        )


def _needs_blocked(m: QuantizedModule) -> bool:
    return m.spec is not None and (m.spec.dtype == "int4" or m.spec.granularity == "per-group")


def _choose_opset(layers: dict[str, QuantizedModule], opset: int | None) -> int:
    blocked = [n for n, m in layers.items() if _needs_blocked(m)]
    if opset is None:
        return BLOCKED_OPSET if blocked else DEFAULT_OPSET
    if not MIN_OPSET <= int(opset) <= MAX_OPSET:
        raise ExportError(f"opset: {opset} is not supported; choose {MIN_OPSET} to {MAX_OPSET}")
    if blocked and int(opset) < BLOCKED_OPSET:
        raise ExportError(
            f"opset: int4 and per-group weights need opset {BLOCKED_OPSET} (blocked DequantizeLinear), "
            f"{opset} was asked for; layers: {', '.join(blocked)}",
            blocked,
        )
    return int(opset)


def _export_copy(model: nn.Module, layers: dict[str, QuantizedModule]) -> nn.Module:
    """A copy of ``model``'s modules sharing its tensors, with every quantized layer swapped for its twin."""
    memo: dict[int, Any] = {id(t): t for t in itertools.chain(model.parameters(), model.buffers())}
    clone = copy.deepcopy(model, memo)
    for name in layers:
        twin = twin_for(clone.get_submodule(name) if name else clone)  # type: ignore[arg-type]
        assert twin is not None  # _check_layers refused the others
        if not name:
            return twin
        clone.set_submodule(name, twin)
    return clone


class _Call(nn.Module):
    """``model(*args, **kwargs)`` from flat positional tensors: the exporter's view of a dict example."""

    def __init__(self, model: nn.Module, n_args: int, keys: list[str]) -> None:
        super().__init__()
        self.model = model
        self.n_args, self.keys = n_args, keys

    def forward(self, *tensors: torch.Tensor) -> Any:
        return self.model(*tensors[: self.n_args], **dict(zip(self.keys, tensors[self.n_args :], strict=True)))


def _input_names(model: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> list[str]:
    """Positional inputs by ``forward``'s parameter names (``input_<i>`` past them), then the dict's keys."""
    try:
        params = [
            p.name
            for p in inspect.signature(model.forward).parameters.values()
            if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
        ]
    except (TypeError, ValueError):
        params = []
    names = [params[i] if i < len(params) else f"input_{i}" for i in range(len(args))]
    return names + [str(k) for k in kwargs]


def _example(example: Any) -> tuple[tuple[torch.Tensor, ...], dict[str, torch.Tensor]]:
    args, kwargs = as_call_args(example)
    bad = [f"argument {i + 1}" for i, a in enumerate(args) if not isinstance(a, torch.Tensor)]
    bad += [f"key {k!r}" for k, v in kwargs.items() if not isinstance(v, torch.Tensor)]
    if bad or not (args or kwargs):
        raise ExportError(
            "example: a tensor, a tuple/list of tensors or a dict of tensors is needed"
            + (f" ({', '.join(bad)} is not a tensor)" if bad else " (it is empty)")
        )
    return tuple(args), dict(kwargs)


def _outputs(model: nn.Module, args: tuple[Any, ...]) -> tuple[list[str], list[int]]:
    """Names and ranks of the tensors the model returns, in the order the exporter flattens them:
    a mapping's keys (a Hugging Face ``ModelOutput``'s fields), else ``output`` / ``output_<i>``."""
    with torch.no_grad():
        out = model(*args)
    if isinstance(out, Mapping) and all(isinstance(v, torch.Tensor) for v in out.values()):
        return [str(k) for k in out], [v.dim() for v in out.values()]
    leaves = [t for t in torch.utils._pytree.tree_leaves(out) if isinstance(t, torch.Tensor)]
    names = ["output"] if len(leaves) == 1 else [f"output_{i}" for i in range(len(leaves))]
    return names, [t.dim() for t in leaves]


def _rename(graph: Any, mapping: dict[str, str]) -> None:
    """Rename values (initializers, node inputs and outputs, graph outputs) in place."""
    for init in graph.initializer:
        init.name = mapping.get(init.name, init.name)
    for node in graph.node:
        node.input[:] = [mapping.get(n, n) for n in node.input]
        node.output[:] = [mapping.get(n, n) for n in node.output]
    for value in itertools.chain(graph.input, graph.output, graph.value_info):
        value.name = mapping.get(value.name, value.name)


def _pack4(values: Any) -> bytes:
    """4-bit values (numpy integers) packed two per byte, the first in the low nibble (ONNX INT4/UINT4)."""
    import numpy as np

    flat = (values.astype(np.int16).reshape(-1) & 0x0F).astype(np.uint8)
    if flat.size % 2:
        flat = np.concatenate([flat, np.zeros(1, dtype=np.uint8)])
    return (flat[0::2] | (flat[1::2] << 4)).astype(np.uint8).tobytes()


def _to_4bit(onnx: Any, graph: Any, names: set[str]) -> int:
    """Rewrite the initializers in ``names`` (int4 codes and zero points) as INT4 / UINT4; the count done."""
    from onnx import numpy_helper

    done = 0
    for i, init in enumerate(graph.initializer):
        if init.name not in names:
            continue
        arr = numpy_helper.to_array(init)
        kind = onnx.TensorProto.UINT4 if arr.dtype.kind == "u" else onnx.TensorProto.INT4
        packed = onnx.helper.make_tensor(init.name, kind, list(arr.shape), _pack4(arr), raw=True)
        graph.initializer[i].CopyFrom(packed)
        done += 1
    return done


def _tensor_bytes(t: Any) -> int:
    """Bytes of one initializer's values as stored (raw data, or the typed fields)."""
    if t.raw_data:
        return len(t.raw_data)
    return t.ByteSize()


def _int4_names(root: nn.Module) -> set[str]:
    names: set[str] = set()
    for name, m in root.named_modules():
        if isinstance(m, ExportWeight) and m.int4:
            names.add(f"{name}.codes")
            if m.zero_point is not None:
                names.add(f"{name}.zero_point")
    return names


def _dynamic_axes(
    names: list[str], ranks: list[int], dynamic_batch: bool, extra: Mapping[str, Mapping[int, str]] | None
) -> dict[str, dict[int, str]]:
    """Axis 0 of every input and output named ``batch`` (``dynamic_batch``), plus the axes ``extra`` names."""
    axes: dict[str, dict[int, str]] = {
        n: {0: "batch"} for n, r in zip(names, ranks, strict=True) if dynamic_batch and r
    }
    unknown = sorted(set(extra or {}) - set(names))
    if unknown:
        raise ExportError(
            f"dynamic_axes: {', '.join(map(repr, unknown))} is not an input or output (they are {', '.join(names)})"
        )
    for name, named in (extra or {}).items():
        axes.setdefault(name, {}).update({int(a): str(d) for a, d in named.items()})
    return axes


def _set_opset(proto: Any, target: int, path: str) -> None:
    """Raise the graph's default-domain opset from what the exporter wrote to ``target`` (see above)."""
    if target > TORCHSCRIPT_MAX_OPSET and any(n.op_type == "GroupNormalization" for n in proto.graph.node):
        raise ExportError(f"ONNX export of {path}: GroupNormalization changed meaning in opset 21; export at 20")
    for op in proto.opset_import:
        if op.domain in ("", "ai.onnx"):
            op.version = target


def _trace(
    root: nn.Module,
    inputs: tuple[torch.Tensor, ...],
    input_names: list[str],
    output_names: list[str],
    opset: int,
    dynamic_axes: dict[str, dict[int, str]],
) -> bytes:
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation and tracer warnings
        torch.onnx.export(
            root,
            inputs,
            cast(Any, buffer),  # the TorchScript exporter writes to a file object (typed for paths only)
            dynamo=False,
            opset_version=min(opset, TORCHSCRIPT_MAX_OPSET),
            do_constant_folding=False,
            input_names=input_names,
            output_names=output_names,
            dynamic_axes=dynamic_axes or None,
        )
    return buffer.getvalue()


def _guarded(path: str, what: str, step: Callable[[], T]) -> T:
    """``step()``, its errors (but mono-quant's own) raised again as ExportError saying ``what`` went wrong."""
    try:
        return step()
    except MonoQuantError:
        raise
    except Exception as exc:  # torch's and the model's errors, with the cause chained
        raise ExportError(f"ONNX export of {path}: {what}: {type(exc).__name__}: {exc}") from exc


def export_onnx(
    qmodel_or_result: Any,
    example: Any,
    path: str | os.PathLike[str],
    opset: int | None = None,
    dynamic_batch: bool = True,
    dynamic_axes: Mapping[str, Mapping[int, str]] | None = None,
) -> OnnxExport:
    """Write the quantized model as an ONNX QDQ graph to ``path`` (atomically) and say what was written.

    ``qmodel_or_result``: a :class:`~mono_quant_core.QuantResult` (``quantize`` /
    ``open_quantized``) or a quantized ``nn.Module``, which is not modified.
    ``example``: one input as a calibration sample is (a tensor, a tuple/list of tensors — positional
    inputs named after ``forward``'s parameters — or a dict of tensors — keyword inputs named by its
    keys).  ``opset``: 13 to 21; by default 17, or 21 when int4 / per-group weights need blocked
    ``DequantizeLinear``.  ``dynamic_batch``: axis 0 of every input and output is ``batch``.  ``dynamic_axes``: more
    variable axes by input / output name (``{"input_ids": {1: "sequence"}}``); the outputs are named
    after the keys of a returned mapping (a Hugging Face ``ModelOutput``), else ``output`` / ``output_<i>``.
    """
    onnx = _onnx()
    model = _model_of(qmodel_or_result)
    layers = _quantized_layers(model)
    _check_layers(layers)
    target = _choose_opset(layers, opset)
    args, kwargs = _example(example)
    path = os.fspath(path)

    root = _guarded(path, "the model could not be copied for export", lambda: _export_copy(model, layers))
    input_names = _input_names(model, args, kwargs)
    if kwargs:
        root = _Call(root, len(args), list(kwargs))
    inputs = (*args, *kwargs.values())
    output_names, ranks = _guarded(path, "the model failed on the example", lambda: _outputs(root, inputs))
    axes = _dynamic_axes(input_names + output_names, [t.dim() for t in inputs] + ranks, dynamic_batch, dynamic_axes)
    data = _guarded(
        path, "torch.onnx.export failed", lambda: _trace(root, inputs, input_names, output_names, target, axes)
    )

    proto = onnx.load_from_string(data)
    int4 = _int4_names(root)
    if _to_4bit(onnx, proto.graph, int4) != len(int4):
        raise ExportError(f"ONNX export of {path}: some int4 weights are missing from the traced graph")
    if kwargs:  # names as in the model, not the wrapper's
        _rename(
            proto.graph,
            {i.name: i.name[len(_WRAPPED) :] for i in proto.graph.initializer if i.name.startswith(_WRAPPED)},
        )
    _set_opset(proto, target, path)
    proto.producer_name = "mono-quant"
    try:
        onnx.checker.check_model(proto)
    except onnx.checker.ValidationError as exc:
        raise ExportError(f"ONNX export of {path}: the graph fails onnx.checker: {exc}") from exc
    size = proto.ByteSize()
    if size > PROTOBUF_LIMIT:
        raise ExportError(
            f"ONNX export of {path}: the graph would be {size} bytes, over protobuf's 2 GiB limit for one file"
        )
    blob = proto.SerializeToString()
    with atomic_write(path) as f:
        f.write(blob)
    ops = [n.op_type for n in proto.graph.node]
    data_bytes = sum(_tensor_bytes(t) for t in proto.graph.initializer)
    return OnnxExport(
        path=path,
        opset=target,
        input_names=input_names,
        output_names=output_names,
        file_bytes=len(blob),
        initializer_bytes=data_bytes,
        graph_bytes=len(blob) - data_bytes,
        quantize_nodes=ops.count("QuantizeLinear") + ops.count("DynamicQuantizeLinear"),
        dequantize_nodes=ops.count("DequantizeLinear"),
        layers=list(layers),
    )
