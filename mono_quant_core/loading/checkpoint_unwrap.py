"""Find the state dict inside what ``torch.load`` returned.

Training tools wrap it: ``{"state_dict": ...}`` (Lightning), ``{"model": ...}``,
``{"model_state_dict": ...}``, ``{"module": ...}`` (DeepSpeed), possibly nested.
Prefixes such as Lightning's ``model.`` or DDP's ``module.`` are handled later,
against the model's own names (``key_matching``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from ..errors import CheckpointError

WRAPPER_KEYS = ("state_dict", "model_state_dict", "model", "module")


def unwrap_state_dict(obj: Any, file_name: str) -> tuple[dict[str, torch.Tensor], str | None, list[str]]:
    """Return ``(tensors by name, wrapper path like "state_dict" or None, ignored non-tensor names)``."""
    if isinstance(obj, torch.Tensor):
        raise CheckpointError(f"{file_name}: holds a single tensor, not a state dict of named tensors")
    if not isinstance(obj, Mapping):
        raise CheckpointError(
            f"{file_name}: holds a {type(obj).__name__}, not a state dict; "
            "save it with torch.save(model.state_dict(), path)"
        )
    path: list[str] = []
    while not _all_tensors(obj):
        inner = next((k for k in WRAPPER_KEYS if isinstance(obj.get(k), Mapping) and obj[k]), None)
        if inner is None:
            break
        path.append(inner)
        obj = obj[inner]
    tensors: dict[str, torch.Tensor] = {}
    ignored: list[str] = []
    _flatten(obj, "", tensors, ignored)
    if not tensors:
        raise CheckpointError(f"{file_name}: contains no tensors")
    return tensors, "/".join(path) or None, ignored


def _all_tensors(obj: Mapping) -> bool:
    return all(isinstance(v, torch.Tensor) for v in obj.values())


def _flatten(obj: Mapping, prefix: str, out: dict, ignored: list[str]) -> None:
    for key, value in obj.items():
        name = f"{prefix}{key}"
        if isinstance(value, torch.Tensor):
            out[name] = value
        elif isinstance(value, Mapping):
            _flatten(value, f"{name}.", out, ignored)
        else:
            ignored.append(name)
