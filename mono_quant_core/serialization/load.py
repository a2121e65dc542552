"""``load_quantized``: rebuild a runnable quantized model from a file and its float architecture."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from ..errors import QuantizedFileError
from ..folding import restore_folded
from ..modules.attention import disable_fused_fast_paths
from ..modules.base import QuantizedModule
from ..modules.registry import REPLACEMENTS
from ..structure import get_submodule, set_submodule, shallow_clone
from .metadata import quant_meta_of
from .read import read_file, read_verified

_MAX_LISTED = 8


def _names(names: Iterable[str]) -> str:
    keys = sorted(names)
    more = f" and {len(keys) - _MAX_LISTED} more" if len(keys) > _MAX_LISTED else ""
    return ", ".join(keys[:_MAX_LISTED]) + more


def _made_from(meta: dict[str, Any]) -> str:
    source = meta.get("source") or {}
    script = source.get("script")
    if not script:
        return "a script the file does not name"
    entry = f", entry {source['entry']!r}" if source.get("entry") else ""
    kwargs = f", entry_kwargs {json.dumps(source['entry_kwargs'])}" if source.get("entry_kwargs") else ""
    return f"{script}{entry}{kwargs}"


def replacement_class(record: dict[str, Any], path: str) -> type[QuantizedModule]:
    cls = REPLACEMENTS.get(record["type"])
    if cls is None:
        raise QuantizedFileError(
            f"{path}: layer {record['name']!r} has type {record['type']!r}, which this mono-quant cannot load"
        )
    return cls


def _swap_layers(model: nn.Module, meta: dict[str, Any], path: str, origin: str) -> nn.Module:
    """Replace every layer the metadata names by an empty quantized module (``from_meta``)."""
    missing, wrong, shapes = [], [], []
    made: dict[int, nn.Module] = {}  # a float module reused under two names stays shared
    for record in meta["layers"]:
        name = record["name"]
        try:
            float_module = get_submodule(model, name)
        except AttributeError:
            missing.append(name)
            continue
        if type(float_module).__name__ != record["type"]:
            wrong.append(f"{name} (file: {record['type']}, model: {type(float_module).__name__})")
            continue
        weight, shape = getattr(float_module, "weight", None), record.get("shape")
        if isinstance(weight, torch.Tensor) and shape is not None and list(weight.shape) != list(shape):
            shapes.append(f"{name} (file {list(shape)}, model {list(weight.shape)})")
            continue
        qmodule = made.get(id(float_module))
        if qmodule is None:
            try:
                qmodule = replacement_class(record, path).from_meta(quant_meta_of(record), float_module)
                qmodule.restore_notes(quant_meta_of(record))
            except QuantizedFileError as exc:
                raise QuantizedFileError(
                    f"{path}: layer {name!r}: {exc}; the file was made from {_made_from(meta)}"
                ) from exc
            made[id(float_module)] = qmodule
        if name:
            set_submodule(model, name, qmodule)
        else:
            model = qmodule
    if missing or wrong or shapes:
        problems = (
            ([f"layers missing from the model: {_names(missing)}"] if missing else [])
            + ([f"layers of another type: {', '.join(wrong[:_MAX_LISTED])}"] if wrong else [])
            + ([f"layers of another shape: {', '.join(shapes[:_MAX_LISTED])}"] if shapes else [])
        )
        raise QuantizedFileError(
            f"{path}: {origin} does not match the file ({'; '.join(problems)}); the file was made "
            f"from {_made_from(meta)}"
        )
    return model


def _check_keys(
    model: nn.Module, tensors: dict[str, torch.Tensor], meta: dict[str, Any], path: str, origin: str
) -> None:
    expected = model.state_dict()
    missing = [k for k in expected if k not in tensors]
    unexpected = [k for k in tensors if k not in expected]
    mismatched = [
        f"{k} (file {tuple(t.shape)}, model {tuple(expected[k].shape)})"
        for k, t in tensors.items()
        if k in expected and t.shape != expected[k].shape
    ]
    mismatched += [
        f"{k} (file {t.dtype}, model {expected[k].dtype})"
        for k, t in tensors.items()
        if k in expected
        and t.dtype != expected[k].dtype
        and not (t.is_floating_point() and expected[k].is_floating_point())
    ]
    if missing or unexpected or mismatched:
        parts = []
        if missing:
            parts.append(f"missing from the file: {_names(missing)}")
        if unexpected:
            parts.append(f"not in the model: {_names(unexpected)}")
        if mismatched:
            parts.append(f"mismatched: {', '.join(mismatched[:_MAX_LISTED])}")
        raise QuantizedFileError(
            f"{path}: {origin} does not match the file ({'; '.join(parts)}); the file was made from {_made_from(meta)}"
        )


def _retie(model: nn.Module, aliases: dict[str, str]) -> None:
    """Make tied tensors the same object again (loading assigned each name its own wrapper)."""
    for alias, kept in aliases.items():
        owner_name, _, leaf = alias.rpartition(".")
        kept_owner_name, _, kept_leaf = kept.rpartition(".")
        owner, kept_owner = get_submodule(model, owner_name), get_submodule(model, kept_owner_name)
        if leaf in owner._parameters and kept_leaf in kept_owner._parameters:
            setattr(owner, leaf, kept_owner._parameters[kept_leaf])
        elif leaf in owner._buffers and kept_leaf in kept_owner._buffers:
            setattr(owner, leaf, kept_owner._buffers[kept_leaf])


def assemble(
    float_model: nn.Module, meta: dict[str, Any], tensors: dict[str, torch.Tensor], path: str, origin: str
) -> nn.Module:
    """Swap in the quantized layers of ``float_model`` (changed in place) and load the tensors."""
    tensors = dict(tensors)
    for alias, kept in meta["aliases"].items():
        if kept not in tensors:
            raise QuantizedFileError(f"{path}: corrupt: alias {alias!r} points at missing tensor {kept!r}")
        tensors[alias] = tensors[kept]
    restore_folded(float_model, meta.get("folded_batchnorm", []), path)  # folded BatchNorms: identities again
    model = _swap_layers(float_model, meta, path, origin)
    _check_keys(model, tensors, meta, path, origin)
    model.load_state_dict(tensors, strict=True, assign=True)
    _retie(model, meta["aliases"])
    disable_fused_fast_paths(model)  # torch's fused transformer paths would read the int8 codes
    return model.eval()


def _meta_leftovers(model: nn.Module) -> bool:
    """True when a tensor the model may use is still on the meta device (no data)."""

    def has_meta(value: object, depth: int = 0) -> bool:
        if isinstance(value, torch.Tensor):
            return value.device.type == "meta"
        if depth < 2 and isinstance(value, (list, tuple)):
            return any(has_meta(v, depth + 1) for v in value)
        if depth < 2 and isinstance(value, dict):
            return any(has_meta(v, depth + 1) for v in value.values())
        return False

    if any(t.device.type == "meta" for t in model.parameters()) or any(
        t.device.type == "meta" for t in model.buffers()
    ):
        return True
    classes = set()
    for module in model.modules():
        classes.add(type(module))
        if any(has_meta(v) for k, v in vars(module).items() if k not in ("_parameters", "_buffers", "_modules")):
            return True
    # Module-level constants of the model script (forward's globals) were built on meta too.
    for cls in classes:
        if cls.__module__.startswith(("torch.", "mono_quant_core.")):
            continue
        forward = getattr(cls, "forward", None)
        if any(has_meta(v) for v in getattr(forward, "__globals__", {}).values()):
            return True
    return False


def _build_on_meta(
    script: str | os.PathLike, entry: str | None, entry_kwargs: dict[str, Any] | None
) -> nn.Module | None:
    """The float architecture built without allocating weights, or None if that fails."""
    from ..loading import load_model

    try:
        from ..loading.script_import import import_script
    except ImportError:
        return None
    # Import (and cache) the script on the CPU first, so that only the model's
    # construction runs under the meta device, never the script's module-level code.
    import_script(script)
    try:
        with torch.device("meta"):
            built = load_model(script, None, entry=entry, entry_kwargs=entry_kwargs)
    except Exception:
        return None
    return shallow_clone(built)


def load_quantized(
    path: str | os.PathLike,
    script: str | os.PathLike | None = None,
    entry: str | None = None,
    entry_kwargs: dict[str, Any] | None = None,
    model: nn.Module | None = None,
    verify: bool = True,
) -> nn.Module:
    """A runnable quantized model from ``path``; the float architecture comes from ``script`` or ``model``.

    ``path`` is a file, or a sharded output: its index, its folder, one of its shards, or the
    name it was saved under (``read.resolve``; docs/file-format.md, "Sharded files").

    ``entry`` and ``entry_kwargs`` default to those recorded in the file.  A
    given ``model`` is never changed (the result is built on a shallow clone).
    ``verify`` checks the SHA-256 hashes the file records of its metadata and
    every tensor (``ContentHashError`` names the first that differs); ``False``
    skips that pass over the data.  Files written before hashes were recorded
    load without the check.
    """
    path = os.fspath(path)
    meta, tensors = read_verified(path)[:2] if verify else read_file(path)
    if model is not None:
        return assemble(shallow_clone(model), meta, tensors, path, "the given model")
    if script is None:
        raise QuantizedFileError(
            f"{path}: loading needs the model script the file was made from ({_made_from(meta)}); "
            "pass script= (--script on the command line) or a float model instance"
        )
    source = meta.get("source") or {}
    entry = entry if entry is not None else source.get("entry")
    entry_kwargs = entry_kwargs if entry_kwargs is not None else (source.get("entry_kwargs") or None)
    origin = f"the model from {os.path.basename(os.fspath(script))}"
    # Building on the meta device skips allocating and initialising random
    # weights that the file replaces anyway; scripts that need real tensors
    # while building (or keep unsaved tensors) get an ordinary build.
    skeleton = _build_on_meta(script, entry, entry_kwargs)
    if skeleton is not None:
        try:
            qmodel = assemble(skeleton, meta, tensors, path, origin)
        except (RuntimeError, NotImplementedError, TypeError, ValueError):
            qmodel = None  # a module that needs real weights to be rebuilt
        if qmodel is not None and not _meta_leftovers(qmodel):
            return qmodel
    from ..loading import load_model

    # A clone: the script may hand out a module-level instance, which must stay unchanged.
    float_model = shallow_clone(load_model(script, None, entry=entry, entry_kwargs=entry_kwargs))
    return assemble(float_model, meta, tensors, path, origin)
