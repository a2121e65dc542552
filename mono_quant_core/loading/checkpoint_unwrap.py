"""Find the state dict inside what ``torch.load`` returned, by matching it against the model.

Training tools wrap it: ``{"state_dict": ...}`` (Lightning), ``{"model_state": ...,
"optimizer_state": ..., "step": ...}``, ``{"net": ...}``, ``{"ema": ...}``,
``{"module": ...}`` (DeepSpeed), at any depth.  Every mapping in the file that
holds tensors is a candidate entry; the one whose names fit most of the model's
keys is used (``choose_state_dict``).  Prefixes such as Lightning's ``model.`` or
DDP's ``module.`` are matched against the model's own names (``key_matching``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from ..errors import CheckpointError
from .checkpoint_source import CheckpointEntry, TensorInfo
from .key_matching import match_keys
from .key_report import KeyReport

#: Tie-breaker only: between entries that fit the model equally well, these names
#: win in this order, then the entry that comes first in the file.
WRAPPER_KEYS = ("state_dict", "model_state_dict", "model", "module")
#: Entries are looked for this many levels deep.
MAX_DEPTH = 6

Tensors = dict[str, torch.Tensor]


def checkpoint_entries(obj: Any, file_name: str) -> list[tuple[CheckpointEntry, Tensors]]:
    """Every mapping of ``obj`` that holds tensors, whole file first, with its tensors by relative name."""
    if isinstance(obj, torch.Tensor):
        raise CheckpointError(f"{file_name}: holds a single tensor, not a state dict of named tensors")
    if not isinstance(obj, Mapping):
        raise CheckpointError(
            f"{file_name}: holds a {type(obj).__name__}, not a state dict; "
            "save it with torch.save(model.state_dict(), path)"
        )
    found: list[tuple[CheckpointEntry, Tensors]] = []
    _collect(obj, (), [], found)
    if not found:
        raise CheckpointError(f"{file_name}: contains no tensors")
    return found


Levels = list[tuple[tuple[str, ...], tuple[str, ...]]]


def _collect(node: Mapping | list | tuple, path: tuple[str, ...], levels: Levels, found: list) -> None:
    children = [(str(k), v) for k, v in (node.items() if isinstance(node, Mapping) else enumerate(node))]
    if isinstance(node, Mapping):
        tensors: Tensors = {}
        inside: list[str] = []
        _flatten(node, "", tensors, inside)
        if tensors:
            infos = {k: _info(t) for k, t in tensors.items()}
            found.append((CheckpointEntry(path, infos, inside, levels), tensors))
    if len(path) >= MAX_DEPTH:
        return
    # The keys of this level, shared by every entry below it: siblings are
    # worked out only for the entry that is used.
    here = [*levels, (path, tuple(k for k, _ in children))]
    for key, value in children:
        # Lists are never part of a state dict, but may hold one ({"models": [sd, ...]}).
        if isinstance(value, (Mapping, list, tuple)):
            _collect(value, (*path, key), here, found)


def _flatten(obj: Mapping, prefix: str, out: Tensors, ignored: list[str]) -> None:
    for key, value in obj.items():
        name = f"{prefix}{key}"
        if isinstance(value, torch.Tensor):
            out[name] = value
        elif isinstance(value, Mapping):
            _flatten(value, f"{name}.", out, ignored)
        else:
            ignored.append(name)


def _info(t: torch.Tensor) -> TensorInfo:
    return TensorInfo(tuple(t.shape), str(t.dtype).removeprefix("torch."), t.numel() * t.element_size())


def choose_state_dict(
    entries: list[CheckpointEntry], model: nn.Module
) -> tuple[CheckpointEntry, KeyReport, list[tuple[str, str]]]:
    """The entry that fits most of the model's keys, its report and its ``(checkpoint, model)`` name pairs.

    Ranked by names that match (loaded or of another shape), then tensors loaded,
    then fewest tensors left unused, then least renaming (prefix length), then
    ``WRAPPER_KEYS``, then depth and file order.
    """
    if len(entries) == 1:
        return entries[0], *match_keys(entries[0].infos, model)
    leaves = {name.rsplit(".", 1)[-1] for name in model.state_dict()}
    leaves |= {name.rsplit(".", 1)[-1] for name, _ in model.named_buffers(remove_duplicate=False)}
    best: tuple | None = None
    for order, entry in enumerate(entries):
        # A mapping none of whose names ends like a model key (an optimizer's
        # per-parameter state: exp_avg, step) cannot fit; skip the matching.
        if order and not any(name.rsplit(".", 1)[-1] in leaves for name in entry.infos):
            continue
        report, pairs = match_keys(entry.infos, model)
        rank = (
            -(report.loaded + len(report.mismatched)),
            -report.loaded,
            len(report.unexpected) + len(report.mismatched),
            len(report.prefix_stripped or "") + len(report.prefix_added or ""),
            [WRAPPER_KEYS.index(p) if p in WRAPPER_KEYS else len(WRAPPER_KEYS) for p in entry.path],
            len(entry.path),
            order,
        )
        if best is None or rank < best[0]:
            best = (rank, entry, report, pairs)
    assert best is not None  # the whole file (order 0) is always ranked
    return best[1], best[2], best[3]
