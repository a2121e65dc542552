"""``load_model`` / ``open_model``: a float model from its script and checkpoint."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from ..errors import CheckpointError
from .checkpoint_files import CheckpointSource, checkpoint_sha256, open_checkpoint
from .checkpoint_unwrap import choose_state_dict
from .entries import build_entry, choose_entry, parse_entry_kwargs
from .key_report import KeyReport
from .script_import import import_script

PathLike = str | os.PathLike


@dataclass
class LoadedModel:
    """The model (eval mode), what its checkpoint load did, and where it came from."""

    model: nn.Module
    keys: KeyReport
    source: dict[str, Any]


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
) -> LoadedModel:
    """Like ``load_model``, also returning the ``KeyReport`` and the ``source`` record."""
    script_path = Path(script).expanduser().resolve()
    kwargs = parse_entry_kwargs(entry_kwargs)
    module = import_script(script_path)
    name = choose_entry(module, script_path, entry)
    # The checkpoint is opened (names and shapes only) before the model is
    # built, so an unreadable or unsafe file fails fast.
    opened = open_checkpoint(checkpoint) if checkpoint not in (None, "") else None
    try:
        model = build_entry(module, script_path, name, kwargs)
        keys = KeyReport()
        if opened is not None:
            keys = load_into(model, opened, strict, script_path.name)
    finally:
        if opened is not None:
            opened.close()
    model.eval()
    ckpt_path = opened.path if opened is not None else None
    source = {
        "script": script_path.name,
        "script_path": str(script_path),
        "entry": name,
        "entry_kwargs": kwargs,
        "checkpoint": ckpt_path.name if ckpt_path else None,
        "checkpoint_path": str(ckpt_path) if ckpt_path else None,
        "checkpoint_sha256": checkpoint_sha256(ckpt_path) if ckpt_path else None,
    }
    # nn.Module.__setattr__ would be fine for a dict, but object's keeps it out
    # of any custom __setattr__ a user model may define.
    object.__setattr__(model, "_mono_quant_source", source)
    return LoadedModel(model, keys, source)


def load_checkpoint(model: nn.Module, checkpoint: PathLike, strict: bool = True) -> KeyReport:
    """Load ``checkpoint`` into ``model`` in place (for callers that built the model themselves)."""
    opened = open_checkpoint(checkpoint)
    try:
        return load_into(model, opened, strict, type(model).__name__)
    finally:
        opened.close()


def load_into(model: nn.Module, opened: CheckpointSource, strict: bool, model_label: str) -> KeyReport:
    """Choose the entry that fits the model, match names, enforce ``strict``, then copy chunk by chunk."""
    entry, keys, pairs = choose_state_dict(opened.entries, model)
    keys.checkpoint = opened.path.name
    keys.wrapper = entry.label
    keys.ignored_entries = list(entry.ignored)
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
    return keys
