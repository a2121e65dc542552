"""``load_model`` / ``open_model``: a float model from its script and checkpoint."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from torch import nn

from ..errors import CheckpointError, ScriptError
from .checkpoint_files import CheckpointSource, checkpoint_sha256, open_checkpoint
from .checkpoint_unwrap import choose_state_dict
from .entries import build_entry, choose_entry, parse_entry_kwargs
from .key_report import KeyReport
from .lazy_model import LAZY_ATTR, LazyWeights, meta_parameters, params_on_meta
from .script_import import import_script

PathLike = str | os.PathLike
log = logging.getLogger("mono_quant_core")
#: ``open_model(lazy="auto")`` builds lazily from checkpoints at least this large.
LAZY_AUTO_BYTES = 512 << 20


@dataclass
class LoadedModel:
    """The model (eval mode), what its checkpoint load did, and where it came from."""

    model: nn.Module
    keys: KeyReport
    source: dict[str, Any]
    #: Whether the model was built without its float weights (open_model's ``lazy``).
    lazy: bool = False


def load_model(
    script: PathLike,
    checkpoint: PathLike | None = None,
    entry: str | None = None,
    entry_kwargs: Mapping[str, Any] | str | None = None,
    strict: bool = True,
) -> nn.Module:
    """Build the model ``script`` defines, load ``checkpoint`` into it, return it in eval mode."""
    return open_model(script, checkpoint, entry, entry_kwargs, strict).model


def open_model(
    script: PathLike,
    checkpoint: PathLike | None = None,
    entry: str | None = None,
    entry_kwargs: Mapping[str, Any] | str | None = None,
    strict: bool = True,
    lazy: bool | str = False,
) -> LoadedModel:
    """Like ``load_model``, also returning the ``KeyReport`` and the ``source`` record.

    ``lazy``: build the model without its float weights, which stay in the checkpoint and are
    read when the model runs or a layer is quantized (mono_quant_core.loading.lazy_model); the
    model then takes next to no memory whatever its size.  When the script cannot be built so or
    the checkpoint lacks a parameter, the model is loaded in memory as without ``lazy``, the log
    says why and ``LoadedModel.lazy`` is False.  ``lazy="auto"`` (the CLI, job files and the
    window): lazily when the checkpoint holds at least ``LAZY_AUTO_BYTES`` of tensors, so a model
    that fits comfortably keeps its weights in memory and runs its many forwards (sensitivity,
    validation) without reading them again.
    """
    script_path = Path(script).expanduser().resolve()
    kwargs = parse_entry_kwargs(entry_kwargs)
    module = import_script(script_path)
    name = choose_entry(module, script_path, entry)
    # The checkpoint is opened (names and shapes only) before the model is
    # built, so an unreadable or unsafe file fails fast.
    opened = open_checkpoint(checkpoint) if checkpoint not in (None, "") else None
    built_lazily = False
    try:
        model = None
        if lazy == "auto" and opened is not None:
            lazy = max(sum(i.nbytes for i in e.infos.values()) for e in opened.entries) >= LAZY_AUTO_BYTES
        if lazy and opened is not None:
            model, keys = _open_lazily(module, script_path, name, kwargs, opened, strict)
            built_lazily = model is not None
        if model is None:
            model = build_entry(module, script_path, name, kwargs)
            keys = KeyReport()
            if opened is not None:
                keys = load_into(model, opened, strict, script_path.name)
    finally:
        if opened is not None and not built_lazily:
            opened.close()
    model.eval()
    ckpt_path = opened.path if opened is not None else None
    source: dict[str, Any] = {
        "script": script_path.name,
        "script_path": str(script_path),
        "entry": name,
        "entry_kwargs": kwargs,
        "checkpoint": ckpt_path.name if ckpt_path else None,
        "checkpoint_path": str(ckpt_path) if ckpt_path else None,
        # A lazily built model's checkpoint may be many GB: its hash is computed when a file that
        # records it is written (serialization.metadata.source_record), not while it opens.
        "checkpoint_sha256": checkpoint_sha256(ckpt_path) if ckpt_path and not built_lazily else None,
    }
    if ckpt_path and built_lazily:
        source["checkpoint_sha256_pending"] = True
    # nn.Module.__setattr__ would be fine for a dict, but object's keeps it out
    # of any custom __setattr__ a user model may define.
    object.__setattr__(model, "_mono_quant_source", source)
    return LoadedModel(model, keys, source, lazy=built_lazily)


def _open_lazily(
    module: Any, script_path: Path, name: str, kwargs: dict[str, Any], opened: CheckpointSource, strict: bool
) -> tuple[nn.Module | None, KeyReport]:
    """The model built with its parameters on ``meta`` and its checkpoint's buffers loaded, with
    its LazyWeights; ``(None, KeyReport())`` when that cannot be (the reason is logged)."""
    try:
        with params_on_meta():
            model = build_entry(module, script_path, name, kwargs)
    except ScriptError as exc:
        log.info("%s: building without weights failed (%s); loading the model in memory", script_path.name, exc)
        return None, KeyReport()
    entry, keys, pairs = _match(opened, model)
    keys.deferred = True
    model_name = dict(pairs)
    by_model = {m: c for c, m in pairs}
    names: dict[str, str] = {}
    groups: dict[int, list[str]] = {}
    for n, p in model.named_parameters(remove_duplicate=False):
        groups.setdefault(id(p), []).append(n)
    for tied in groups.values():
        found = next((by_model[n] for n in tied if n in by_model), None)
        if found is not None:
            names.update(dict.fromkeys(tied, found))
    absent = [n for n in meta_parameters(model) if n not in names]
    if absent or not pairs or (strict and not keys.ok):
        why = f"{len(absent)} parameters are not in the checkpoint" if absent else "the checkpoint does not fit"
        log.info("%s: %s; loading the model in memory", opened.path.name, why)
        return None, KeyReport()
    buffers = {n for n, _ in model.named_buffers(remove_duplicate=False)}
    wanted = [c for c, m in pairs if m in buffers]
    for chunk in opened.read(entry, wanted) if wanted else ():
        model.load_state_dict({model_name[c]: t for c, t in chunk.items()}, strict=False)
    object.__setattr__(model, LAZY_ATTR, LazyWeights(opened, entry, model, names))
    cast(LazyWeights, getattr(model, LAZY_ATTR)).stream(model)
    log.info("%s: built without its float weights; they are read from %s as needed", script_path.name, opened.path.name)
    return model, keys


def load_checkpoint(model: nn.Module, checkpoint: PathLike, strict: bool = True) -> KeyReport:
    """Load ``checkpoint`` into ``model`` in place (for callers that built the model themselves)."""
    opened = open_checkpoint(checkpoint)
    try:
        return load_into(model, opened, strict, type(model).__name__)
    finally:
        opened.close()


def _match(opened: CheckpointSource, model: nn.Module) -> tuple[Any, KeyReport, list[tuple[str, str]]]:
    """The checkpoint entry that fits ``model``, its key report (naming the file and entry) and the
    ``(checkpoint, model)`` name pairs."""
    entry, keys, pairs = choose_state_dict(opened.entries, model)
    keys.checkpoint = opened.path.name
    keys.wrapper = entry.label
    keys.ignored_entries = list(entry.ignored)
    return entry, keys, pairs


def load_into(model: nn.Module, opened: CheckpointSource, strict: bool, model_label: str) -> KeyReport:
    """Choose the entry that fits the model, match names, enforce ``strict``, then copy chunk by chunk."""
    entry, keys, pairs = _match(opened, model)
    if not pairs:
        raise CheckpointError(
            f"{opened.path.name}: none of its {len(entry.infos)} tensors fits the model from "
            f"{model_label}; is it the checkpoint for this model?\n{keys.problems()}",
            keys=keys,
        )
    if strict and not keys.ok:
        raise CheckpointError(
            f"{opened.path.name}: does not match the model from {model_label}:\n{keys.problems()}\n"
            "To load the tensors that match and keep the script's own values for the rest, "
            "load with strict=False.",
            keys=keys,
        )
    model_name = dict(pairs)
    for chunk in opened.read(entry, [c for c, _ in pairs]):
        try:
            # Copies into the existing parameters (keeping their dtype, device
            # and any weight tying) and runs the modules' own load hooks.
            model.load_state_dict({model_name[c]: t for c, t in chunk.items()}, strict=False)
        except RuntimeError as exc:
            raise CheckpointError(f"{opened.path.name}: the model refused its tensors: {exc}") from exc
        del chunk  # before the next chunk is read: one chunk in memory at a time
    return keys
