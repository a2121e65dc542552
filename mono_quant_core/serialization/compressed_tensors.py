"""Export to the compressed-tensors layout (what llm-compressor writes; transformers and vLLM read it).

``save_compressed_tensors(result, folder)`` writes ``model.safetensors`` (or shards with
``model.safetensors.index.json`` above ``max_shard_bytes``), ``config.json`` with a
``quantization_config`` and ``mono_quant_export.json`` (what was written and which layers
were kept float), into a temporary sibling folder that is renamed onto ``folder`` only
when whole.  The weights are written shard by shard (``list_export``, ``_write_weights``):
each shard's converted tensors (packed codes, float-kept layers' weights) are made just
before it is written and dropped after, so the export holds at most one shard's worth of
them beside the quantized model, never a second copy of the whole state dict.

How each quantized layer maps (compressed-tensors 0.20, ``compressors/pack_quantized`` and
``naive_quantized``):

* Linear with activation quantization (dynamic / static): format ``int-quantized``;
  ``<layer>.weight`` int8 signed codes (int4 codes too, in [-8, 7], unpacked), as
  compressed-tensors' ``infer_module_format`` chooses for any scheme with input activations.
* Linear weight-only: format ``pack-quantized``; ``<layer>.weight_packed`` int32, the signed
  codes offset by ``2**(bits-1)`` and packed densely along the input dimension (8 int4 or 4
  int8 values per word, first value in the lowest bits), ``<layer>.weight_shape`` int64 [2];
  an asymmetric zero point is packed the same way along the output dimension.
* ``<layer>.weight_scale``: float32 ``[1]`` (tensor), ``[out, 1]`` (channel) or
  ``[out, groups]`` (group); ``<layer>.weight_zero_point`` int8 of that shape (asymmetric
  only).  Our asymmetric int4 codes and zero points (0..15) become ``code - 8`` and
  ``zp - 8``: ``(q - zp)`` is unchanged, so decompression gives exactly our dequantized weight.
* Static mode: ``<layer>.input_scale`` float32 [1] and ``<layer>.input_zero_point`` int8 [1]
  (our activations are per-tensor asymmetric int8).
* ``float-quantized`` is compressed-tensors' fp8 format: mono-quant has no fp8 dtype, so it
  never applies.  The fp16/bf16 casts are written as plain float tensors.

Layers that compressed-tensors cannot express (quantized Conv / Embedding / LSTM, int4
groups that do not divide ``in_features``, per-channel along the input axis, SmoothQuant
factors stored in the layer) are exported float with their dequantized weights (the
module's ``to_float()``) and listed in ``ignore`` and in ``mono_quant_export.json``;
``compressed_tensors_problems`` names them (and the schemes vLLM cannot run) before export.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import re
import shutil
import tempfile
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from ..errors import ConfigError
from ..modules.base import QuantizedModule
from ..modules.linear import QuantizedLinear
from ..tensor import decode
from . import safetensors_file
from .atomic import _new_file_mode, describe_os_error
from .leftovers import host_id, process_exists, temp_prefix
from .metadata import versions
from .sharded import split

if TYPE_CHECKING:
    from ..quantizer import QuantResult

#: The file that marks a folder as an export of ours (and lists what we wrote there).
MARKER = "mono_quant_export.json"
#: transformers' default shard size (``max_shard_size="5GB"``).
DEFAULT_MAX_SHARD_BYTES = 5 * 1000**3
WEIGHTS = "model.safetensors"
INDEX = "model.safetensors.index.json"
PACK_QUANTIZED, INT_QUANTIZED = "pack-quantized", "int-quantized"
_FOLDER_TMP = re.compile(r"\.(?P<target>.+)\.mq-(?P<host>[0-9a-f]{8})-(?P<pid>[0-9]{1,10})-[a-z0-9_]{8}\.tmp")
_DTYPE_NAMES = {torch.float32: "float32", torch.float16: "float16", torch.bfloat16: "bfloat16"}


@dataclass(frozen=True)
class LayerPlan:
    """One quantized module: its compressed-tensors scheme (as a JSON-able key), or why it stays float."""

    name: str
    module: QuantizedModule
    scheme: tuple[tuple[str, Any], ...] | None
    float_reason: str | None


def _weight_args(module: QuantizedModule) -> dict[str, Any]:
    spec = module.spec
    assert spec is not None
    strategy = {"per-tensor": "tensor", "per-channel": "channel", "per-group": "group"}[spec.granularity]
    return {
        "num_bits": 8 if spec.dtype == "int8" else 4,
        "type": "int",
        "symmetric": spec.symmetric,
        "strategy": strategy,
        "group_size": spec.group_size if strategy == "group" else None,
        "dynamic": False,
        "actorder": None,
        "observer": "minmax",
    }


def _input_args(module: QuantizedModule) -> dict[str, Any] | None:
    if module.mode == "weight-only":
        return None
    static = module.mode == "static"
    return {
        "num_bits": 8,
        "type": "int",
        "symmetric": False,
        "strategy": "tensor",
        "group_size": None,
        "dynamic": not static,
        "actorder": None,
        "observer": "minmax" if static else "memoryless_minmax",
    }


def _float_reason(module: QuantizedModule) -> str | None:
    """Why ``module`` cannot be written in compressed-tensors' layout, or None."""
    if not isinstance(module, QuantizedLinear):
        return f"a quantized {module.float_type.__name__}: compressed-tensors consumers quantize Linear layers only"
    spec = module.spec
    if spec is None:
        return f"a {module.qdtype} cast: not a compressed-tensors quantization (written as {module.qdtype} tensors)"
    if spec.granularity == "per-channel" and spec.axis % 2 != 0:
        return "per-channel along the input axis: compressed-tensors' channels are output channels"
    if spec.granularity == "per-group" and module.in_features % spec.group_size:
        return (
            f"group size {spec.group_size} does not divide in_features {module.in_features}: "
            "compressed-tensors needs whole groups (choose a group size that divides it)"
        )
    if "input_smoothing" in module._buffers:
        return "SmoothQuant factors stored in the layer: compressed-tensors has no input smoothing tensor"
    return None


def plan_layers(model: nn.Module) -> list[LayerPlan]:
    """Every quantized module with its scheme or the reason it is kept float."""
    from .save import quantized_layers

    plans = []
    for name, module in quantized_layers(model):
        reason = _float_reason(module)
        scheme = None
        if reason is None:
            inputs = _input_args(module)
            fmt = INT_QUANTIZED if inputs is not None else PACK_QUANTIZED
            scheme = (
                ("weights", tuple(_weight_args(module).items())),
                ("input_activations", None if inputs is None else tuple(inputs.items())),
                ("format", fmt),
            )
        plans.append(LayerPlan(name, module, scheme, reason))
    return plans


def _vllm_problems(plan: LayerPlan) -> list[str]:
    """What vLLM's compressed-tensors kernels cannot run in this layer's scheme, and what to change."""
    assert plan.scheme is not None
    scheme = dict(plan.scheme)
    w = dict(scheme["weights"])
    inputs = scheme["input_activations"]
    bits, where = w["num_bits"], f"{plan.name}: vLLM"
    if inputs is not None:
        problems = []
        if bits != 8:
            problems.append(f"{where} has no int{bits}-weight, int8-activation kernel; use int4 weight-only or int8")
        if not w["symmetric"]:
            problems.append(f"{where}'s W8A8 path needs symmetric weights; choose scheme symmetric")
        if w["strategy"] == "group":
            problems.append(f"{where}'s W8A8 path takes per-channel or per-tensor weights, not per-group")
        if dict(inputs)["dynamic"]:
            problems.append(
                f"{where}'s dynamic int8 path quantizes activations per token, these are per tensor; "
                "transformers runs them as exported (or choose mode static)"
            )
        return problems
    if w["strategy"] == "tensor":
        return [f"{where}'s weight-only kernels take per-channel or per-group weights; choose per-channel"]
    if w["strategy"] == "group" and w["group_size"] not in (32, 64, 128):
        return [f"{where}'s weight-only (Marlin) kernels take group sizes 32, 64 and 128; choose one of them"]
    return []


def compressed_tensors_problems(result: QuantResult) -> list[str]:
    """What the export cannot express (those layers are written float) and what consumers cannot run.

    Empty when every quantized layer exports as it is and vLLM runs every scheme.  Each line
    names the layer and says what to change.
    """
    problems: list[str] = []
    for plan in plan_layers(result.model):
        if plan.float_reason is not None:
            problems.append(f"{plan.name}: exported float (dequantized weights): {plan.float_reason}")
        else:
            problems.extend(_vllm_problems(plan))
    return problems


# -- tensors ------------------------------------------------------------------------------
def pack_int32(codes: torch.Tensor, num_bits: int, packed_dim: int = 1) -> torch.Tensor:
    """Signed int8 ``codes`` ([rows, cols]) packed as compressed-tensors' ``pack_to_int32`` packs them.

    Each value is offset by ``2**(num_bits-1)``, ``32 / num_bits`` consecutive values along
    ``packed_dim`` fill one int32 word from its lowest bits up; the last word is padded with
    zeros.  Computed in int64 arithmetic, so the result does not depend on byte order.
    """
    if num_bits not in (4, 8):
        raise ConfigError(f"num_bits: {num_bits}; only 4 and 8 bit codes are packed")
    values = codes.to(torch.int64) + (1 << (num_bits - 1))
    if packed_dim == 0:
        values = values.t()
    per_word = 32 // num_bits
    rows, cols = values.shape
    pad = -cols % per_word
    if pad:
        values = torch.nn.functional.pad(values, (0, pad))
    shifts = torch.arange(per_word, dtype=torch.int64) * num_bits
    words = (values.reshape(rows, -1, per_word) << shifts).sum(dim=-1)
    words = torch.where(words >= 1 << 31, words - (1 << 32), words).to(torch.int32)
    return (words.t() if packed_dim == 0 else words).contiguous()


def _buffer(module: nn.Module, name: str) -> torch.Tensor:
    if isinstance(module, QuantizedModule) and name in module.weight_shapes:
        return module.stored(name)  # codes a packed kernel holds alone are unpacked for this read
    t = module._buffers.get(name)
    assert t is not None, name  # every quantized integer weight has its codes and scale
    return t


def _signed_codes(module: QuantizedModule) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The weight's codes and zero point in compressed-tensors' signed convention (int8)."""
    spec = module.spec
    assert spec is not None
    codes = decode(_buffer(module, "weight"), spec, module.weight_shapes["weight"]).to(torch.int8)
    zp = module._buffers.get("weight_zero_point")
    if spec.dtype == "int4" and not spec.symmetric:  # ours 0..15, theirs -8..7: q - zp unchanged
        codes = (codes.to(torch.int16) - 8).to(torch.int8)
        assert zp is not None
        zp = (zp.to(torch.int16) - 8).to(torch.int8)
    return codes, None if zp is None else zp.to(torch.int8)


def _layer_tensors(plan: LayerPlan) -> dict[str, torch.Tensor]:
    """The compressed-tensors entries of one exportable QuantizedLinear (local names)."""
    module = plan.module
    assert isinstance(module, QuantizedLinear) and plan.scheme is not None
    scheme = dict(plan.scheme)
    w = dict(scheme["weights"])
    codes, zp = _signed_codes(module)
    scale = _buffer(module, "weight_scale").detach().to(torch.float32)
    if w["strategy"] == "channel":
        scale = scale.reshape(-1, 1)
        zp = None if zp is None else zp.reshape(-1, 1)
    out: dict[str, torch.Tensor] = {}
    if scheme["format"] == PACK_QUANTIZED:
        out["weight_packed"] = pack_int32(codes, w["num_bits"])
        out["weight_shape"] = torch.tensor(tuple(codes.shape), dtype=torch.int64)
        if zp is not None and w["strategy"] in ("group", "channel"):
            zp = pack_int32(zp, w["num_bits"], packed_dim=0)
    else:
        out["weight"] = codes
    out["weight_scale"] = scale
    if zp is not None:
        out["weight_zero_point"] = zp
    if module.bias is not None:
        out["bias"] = module.bias.detach()
    if module.mode == "static":
        out["input_scale"] = module.input_scale.detach().to(torch.float32).reshape(1)
        out["input_zero_point"] = module.input_zero_point.detach().to(torch.int8).reshape(1)
    return out


def float_modules(plans: list[LayerPlan]) -> dict[str, nn.Module]:
    """The float modules (``to_float()``: dequantized weights) of the layers kept float."""
    return {p.name: p.module.to_float() for p in plans if p.scheme is None}


def export_tensors(
    model: nn.Module, plans: list[LayerPlan], floats: dict[str, nn.Module] | None = None
) -> dict[str, torch.Tensor]:
    """Every tensor of the export by name: compressed layers, float-kept layers, the rest as they are."""
    floats = float_modules(plans) if floats is None else floats
    by_name = {p.name: p for p in plans}
    tensors: dict[str, torch.Tensor] = {}
    prefixes = tuple(f"{name}." for name in by_name if name)
    for key, t in model.state_dict().items():
        if not key.startswith(prefixes):
            tensors[key] = t
    for name, plan in by_name.items():
        prefix = f"{name}." if name else ""
        local = floats[name].state_dict() if plan.scheme is None else _layer_tensors(plan)
        if plan.scheme is None and plan.module.cast_dtype is not None:
            local = {k: v.to(plan.module.cast_dtype) for k, v in local.items()}  # casts stay fp16 / bf16
        for key, t in local.items():
            tensors[prefix + key] = t
    seen: set[tuple[int, Any]] = set()
    for key, t in list(tensors.items()):
        t = t.detach().cpu().contiguous()
        ident = (t.untyped_storage().data_ptr(), t.storage_offset())
        if t.numel() and ident in seen:
            t = t.clone()  # tied tensors: safetensors refuses shared storage, a copy loads the same
        seen.add(ident)
        tensors[key] = t
    return tensors


# -- config --------------------------------------------------------------------------------
def _linear_names(model: nn.Module) -> list[str]:
    return [n for n, m in model.named_modules() if isinstance(m, nn.Linear | QuantizedLinear)]


def float_linear_names(name: str, module: nn.Module) -> list[str]:
    """The layer ``name`` kept float and the Linears inside its float module (``to_float()``)."""
    inner = [f"{name}.{sub}" if sub else name for sub, m in module.named_modules() if isinstance(m, nn.Linear)]
    return [name, *(n for n in inner if n != name)]


def quantization_config(
    model: nn.Module,
    plans: list[LayerPlan],
    floats: dict[str, nn.Module] | None = None,
    float_linears: dict[str, list[str]] | None = None,
) -> dict[str, Any]:
    """The ``quantization_config`` of ``config.json`` (compressed-tensors' QuantizationConfig layout).

    ``ignore`` holds every Linear that is not exported quantized: the float ones, and those
    inside layers kept float (a float attention module's projections), so that a ``Linear``
    target never reaches them in the consumer's model."""
    if float_linears is None:
        floats = float_modules(plans) if floats is None else floats
        float_linears = {name: float_linear_names(name, module) for name, module in floats.items()}
    exported = [p for p in plans if p.scheme is not None]
    schemes: dict[Any, list[str]] = {}
    for plan in exported:
        schemes.setdefault(plan.scheme, []).append(plan.name)
    exported_names = {p.name for p in exported}
    ignore = [n for n in _linear_names(model) if n not in exported_names]
    for names in float_linears.values():
        ignore += [n for n in names if n not in ignore]
    by_class = len(schemes) == 1
    groups: dict[str, Any] = {}
    for i, (scheme, names) in enumerate(schemes.items()):
        s = dict(scheme)
        groups[f"group_{i}"] = {
            "targets": ["Linear"] if by_class else names,
            "weights": dict(s["weights"]),
            "input_activations": None if s["input_activations"] is None else dict(s["input_activations"]),
            "output_activations": None,
            "format": s["format"],
        }
    formats = {dict(s)["format"] for s in schemes}
    return {
        "quant_method": "compressed-tensors",
        "format": formats.pop() if len(formats) == 1 else ("mixed-precision" if formats else "dense"),
        "quantization_status": "compressed",
        "config_groups": groups,
        "ignore": ignore,
        "kv_cache_scheme": None,
        "sparsity_config": {},
        "transform_config": {},
        "version": _ct_version(),
    }


def _ct_version() -> str:
    try:
        from importlib.metadata import version

        return version("compressed-tensors")
    except Exception:  # only informational
        return "0.20.1"


def _source_config(result: QuantResult) -> dict[str, Any] | None:
    """The Hugging Face ``config.json`` beside the checkpoint the model came from, if any."""
    checkpoint = (result.source or {}).get("checkpoint_path")
    if not checkpoint:
        return None
    path = os.path.join(os.path.dirname(os.fspath(checkpoint)), "config.json")
    try:
        with open(path, encoding="utf-8") as f:
            config = json.load(f)
    except (OSError, ValueError):
        return None
    return config if isinstance(config, dict) else None


def model_config(
    result: QuantResult,
    plans: list[LayerPlan],
    tensors: dict[str, torch.Tensor],
    floats: dict[str, nn.Module] | None = None,
    float_linears: dict[str, list[str]] | None = None,
) -> dict[str, Any]:
    """``config.json``: the source model's (copied) or a minimal one, with ``quantization_config``.

    ``tensors`` may be on the meta device: only their dtypes are read."""
    config = _source_config(result)
    if config is None:
        config = {"architectures": [type(result.model).__name__]}
    config = dict(config)
    dtypes = Counter(t.dtype for t in tensors.values() if t.is_floating_point())
    if dtypes:
        dtype = _DTYPE_NAMES.get(dtypes.most_common(1)[0][0], "float32")
        config["dtype"] = dtype
        if "torch_dtype" in config:
            config["torch_dtype"] = dtype
    config["quantization_config"] = quantization_config(result.model, plans, floats, float_linears)
    return config


# -- the folder ----------------------------------------------------------------------------
def shard(tensors: dict[str, torch.Tensor], max_shard_bytes: int) -> list[dict[str, torch.Tensor]]:
    """Tensors in order, split into shards of at most ``max_shard_bytes`` (a larger tensor alone):
    the same split as mono-quant's own sharded files."""
    return split(tensors, max_shard_bytes)


@dataclass
class ExportListing:
    """What the export holds, known before any converted tensor is kept: each tensor's dtype and
    shape (meta tensors), how to make each group of tensors (a layer's, or one tensor passed
    through), and the Linears inside the layers kept float."""

    specs: dict[str, torch.Tensor]
    groups: list[tuple[list[str], Callable[[], dict[str, torch.Tensor]]]]
    float_linears: dict[str, list[str]]


def _layer_export(plan: LayerPlan) -> tuple[dict[str, torch.Tensor], nn.Module | None]:
    """(the layer's export tensors by full name, its float module if kept float)."""
    prefix = f"{plan.name}." if plan.name else ""
    float_module = plan.module.to_float() if plan.scheme is None else None
    if float_module is None:
        local = _layer_tensors(plan)
    else:
        local = dict(float_module.state_dict())
        if plan.module.cast_dtype is not None:
            local = {k: v.to(plan.module.cast_dtype) for k, v in local.items()}  # casts stay fp16 / bf16
    return {prefix + k: v.detach().cpu().contiguous() for k, v in local.items()}, float_module


def _passed_through(key: str, t: torch.Tensor) -> dict[str, torch.Tensor]:
    return {key: t.detach().cpu().contiguous()}


def _layer_tensors_of(plan: LayerPlan) -> dict[str, torch.Tensor]:
    return _layer_export(plan)[0]


def list_export(model: nn.Module, plans: list[LayerPlan]) -> ExportListing:
    """The export's listing, making each layer's converted tensors once and dropping them at once
    (so at most one layer's are alive); the order is ``export_tensors``'s."""
    prefixes = tuple(f"{p.name}." for p in plans if p.name)
    specs: dict[str, torch.Tensor] = {}
    groups: list[tuple[list[str], Callable[[], dict[str, torch.Tensor]]]] = []
    float_linears: dict[str, list[str]] = {}
    for key, t in model.state_dict().items():
        if not key.startswith(prefixes):
            specs[key] = torch.empty(t.shape, dtype=t.dtype, device="meta")
            groups.append(([key], functools.partial(_passed_through, key, t)))
    for plan in plans:
        made, float_module = _layer_export(plan)
        specs.update((k, torch.empty(v.shape, dtype=v.dtype, device="meta")) for k, v in made.items())
        groups.append((list(made), functools.partial(_layer_tensors_of, plan)))
        if float_module is not None:
            float_linears[plan.name] = float_linear_names(plan.name, float_module)
        del made, float_module
    return ExportListing(specs, groups, float_linears)


def _shard_tensors(listing: ExportListing, names: list[str]) -> dict[str, torch.Tensor]:
    """The tensors ``names`` (one shard), made from their groups now."""
    wanted = set(names)
    found: dict[str, torch.Tensor] = {}
    for keys, make in listing.groups:
        if wanted.intersection(keys):
            found.update((k, v) for k, v in make().items() if k in wanted)
    return {name: found[name] for name in names}


def _write_shard(path: str, tensors: dict[str, torch.Tensor]) -> None:
    """One ``.safetensors`` file, as ``safetensors.torch.save_file(tensors, path, {"format": "pt"})``
    writes it (our writer also accepts tensors that share memory)."""
    header, ordered, _ = safetensors_file.layout(tensors, {"format": "pt"})
    with open(path, "wb") as f:
        safetensors_file.write(f, header, ordered)
        f.flush()
        os.fsync(f.fileno())


def _write_weights(folder: str, listing: ExportListing, max_shard_bytes: int) -> list[str]:
    """Write the weights shard by shard: each shard's tensors are made just before it is written
    and dropped after, so the export never holds more than one shard's converted tensors."""
    shards = shard(listing.specs, max_shard_bytes)
    if len(shards) == 1:
        _write_shard(os.path.join(folder, WEIGHTS), _shard_tensors(listing, list(shards[0])))
        return [WEIGHTS]
    names = [f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors" for i in range(len(shards))]
    weight_map: dict[str, str] = {}
    for name, part in zip(names, shards, strict=True):
        _write_shard(os.path.join(folder, name), _shard_tensors(listing, list(part)))
        weight_map.update(dict.fromkeys(part, name))
    total = sum(t.numel() * t.element_size() for t in listing.specs.values())
    _write_json(os.path.join(folder, INDEX), {"metadata": {"total_size": total}, "weight_map": weight_map})
    return [*names, INDEX]


def _write_json(path: str, data: dict[str, Any]) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=2, sort_keys=False)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())


def _previous_export(path: str) -> bool:
    """Whether the existing folder ``path`` holds only what an earlier export of ours wrote."""
    try:
        with open(os.path.join(path, MARKER), encoding="utf-8") as f:
            files = set(json.load(f)["files"])
        return set(os.listdir(path)) <= files | {MARKER}
    except (OSError, ValueError, KeyError, TypeError):
        return False


def _check_target(path: str, result: QuantResult) -> None:
    """Refuse a target that is a file, or a non-empty folder that is not an earlier export of ours."""
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        raise ConfigError(f"{path}: the folder {parent} does not exist")
    if os.path.lexists(path) and not os.path.isdir(path):
        raise ConfigError(f"{path}: is a file; a compressed-tensors export is a folder, give a folder name")
    if os.path.isdir(path) and os.listdir(path) and not _previous_export(path):
        raise ConfigError(
            f"{path}: the folder is not empty and holds files that are not an earlier mono-quant export; "
            "refusing to replace them, choose an empty or new folder"
        )
    for key in ("checkpoint_path", "script_path"):
        other = (result.source or {}).get(key)
        if other and os.path.abspath(os.fspath(other)).startswith(os.path.abspath(path) + os.sep):
            raise ConfigError(f"{path}: holds the model's {key.split('_')[0]}; choose another folder")


def remove_folder_leftovers(parent: str) -> None:
    """Remove temporary export folders that a killed export of this machine left in ``parent``."""
    with contextlib.suppress(OSError):
        for entry in os.scandir(parent):
            m = _FOLDER_TMP.fullmatch(entry.name)
            if m is None or not entry.is_dir(follow_symlinks=False):
                continue
            if m["host"] == host_id() and not process_exists(int(m["pid"])):
                shutil.rmtree(entry.path, ignore_errors=True)


@contextlib.contextmanager
def atomic_folder(path: str) -> Iterator[str]:
    """Yield a temporary sibling folder that replaces ``path`` only if the block succeeds.

    An earlier export at ``path`` is moved aside, the new folder renamed in, and the old one
    removed; a failure removes the temporary folder and leaves ``path`` as it was.
    """
    parent = os.path.dirname(os.path.abspath(path))
    remove_folder_leftovers(parent)
    name = os.path.basename(os.path.abspath(path))
    try:
        tmp = tempfile.mkdtemp(dir=parent, prefix=temp_prefix(name), suffix=".tmp")
    except OSError as exc:
        raise _folder_error(path, exc) from exc
    try:
        yield tmp
        os.chmod(tmp, _new_folder_mode())
        if os.path.isdir(path):
            old = tempfile.mkdtemp(dir=parent, prefix=temp_prefix(name), suffix=".tmp")
            os.rmdir(old)
            os.rename(path, old)
            try:
                os.rename(tmp, path)
            except OSError:
                os.rename(old, path)  # put the earlier export back
                raise
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(tmp, path)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise _folder_error(path, exc) from exc
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _new_folder_mode() -> int:
    """The mode ``os.mkdir`` would give under the umask (mkdtemp makes folders 0700): the file mode
    ``atomic_write`` uses (read from /proc, thread-safe), searchable wherever it is readable."""
    mode = _new_file_mode(os.path.join(os.sep, "nonexistent", "mono-quant"))
    return mode | ((mode & 0o444) >> 2)


def _folder_error(path: str, exc: OSError) -> Exception:
    from ..errors import QuantizedFileError

    return QuantizedFileError(
        f"{path}: cannot write the export: {describe_os_error(exc)}; nothing was written there "
        "(an earlier export at that path is unchanged)"
    )


def save_compressed_tensors(
    result: QuantResult, path: str | os.PathLike, max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES
) -> int:
    """Write ``result`` as a compressed-tensors folder at ``path``; returns the bytes written."""
    path = os.fspath(path)
    _check_target(path, result)
    if max_shard_bytes < 1:
        raise ConfigError(f"max_shard_bytes: {max_shard_bytes} must be positive")
    plans = plan_layers(result.model)
    listing = list_export(result.model, plans)
    config = model_config(result, plans, listing.specs, float_linears=listing.float_linears)
    with atomic_folder(path) as tmp:
        files = _write_weights(tmp, listing, max_shard_bytes)
        _write_json(os.path.join(tmp, "config.json"), config)
        files.append("config.json")
        marker = {
            "format": "compressed-tensors",
            "versions": versions(),
            "files": files,
            "kept_float": {p.name: p.float_reason for p in plans if p.float_reason is not None},
            "problems": compressed_tensors_problems(result),
        }
        _write_json(os.path.join(tmp, MARKER), marker)
    return sum(os.path.getsize(os.path.join(path, f)) for f in os.listdir(path))
