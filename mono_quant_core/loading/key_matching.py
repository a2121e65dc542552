"""Match checkpoint names to the model's state-dict names.

A prefix is stripped from (``model.``, ``module.``, ``bert.`` …) or added to the
checkpoint's names only when that makes strictly more of them match the model;
candidates are the leading components of either side's names, up to three
deep (``module.model.``).
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from .checkpoint_source import TensorInfo
from .key_report import KeyReport

MAX_PREFIX_STEPS = 2  # a strip and an add
PREFIX_DEPTH = 3


def match_keys(infos: dict[str, TensorInfo], model: nn.Module) -> tuple[KeyReport, list[tuple[str, str]]]:
    """Return the report and the ``(checkpoint name, model name)`` pairs to load."""
    targets = model.state_dict(keep_vars=True)
    computed = {n for n, _ in model.named_buffers(remove_duplicate=False)} - set(targets)
    renamed, stripped, added = _best_renaming(list(infos), set(targets) | computed)
    report = KeyReport(prefix_stripped=stripped or None, prefix_added=added or None)
    pairs: list[tuple[str, str]] = []
    taken: set[str] = set()
    # Names that needed no renaming claim their target first.
    for ckpt in sorted(infos, key=lambda k: renamed[k] != k):
        name = renamed[ckpt]
        if name in computed:
            report.ignored_buffers.append(ckpt)
        elif name not in targets or name in taken:
            report.unexpected.append(ckpt)
        elif tuple(infos[ckpt].shape) != tuple(targets[name].shape):
            report.mismatched.append((name, tuple(targets[name].shape), tuple(infos[ckpt].shape)))
            taken.add(name)
        else:
            pairs.append((ckpt, name))
            taken.add(name)
            model_dtype = str(targets[name].dtype).removeprefix("torch.")
            if infos[ckpt].dtype != model_dtype:
                report.dtype_changes.append((name, infos[ckpt].dtype, model_dtype))
    loaded = {_identity(targets[n]) for _, n in pairs}
    for name in targets:
        if name in taken:
            continue
        if _identity(targets[name]) in loaded:
            report.tied.append(name)
        else:
            report.missing.append(name)
    report.unexpected.sort()
    report.loaded = len(pairs)
    return report, pairs


def _identity(t: torch.Tensor) -> tuple:
    """Equal for tied weights: the same memory seen with the same shape."""
    if t.data_ptr() == 0:
        return ("empty", id(t))
    return (t.data_ptr(), tuple(t.shape), t.stride(), t.dtype)


def _best_renaming(names: list[str], model_names: set[str]) -> tuple[dict[str, str], str, str]:
    current = {n: n for n in names}
    stripped = added = ""
    for _ in range(MAX_PREFIX_STEPS):
        best_score = _score(current, model_names)
        best = None
        for prefix in _firsts(current.values()):
            trial = {k: v[len(prefix) :] if v.startswith(prefix) else v for k, v in current.items()}
            score = _score(trial, model_names)
            if score > best_score:
                best_score, best = score, (trial, prefix, "strip")
        for prefix in _firsts(model_names):
            trial = {k: v if v.startswith(prefix) else prefix + v for k, v in current.items()}
            score = _score(trial, model_names)
            if score > best_score:
                best_score, best = score, (trial, prefix, "add")
        if best is None:
            break
        current, prefix, how = best
        if how == "strip":
            stripped += prefix
        else:
            added = prefix + added
    return current, stripped, added


def _firsts(names: Iterable[str]) -> list[str]:
    """Leading components (``"model."``, ``"module.model."``), up to ``PREFIX_DEPTH`` deep.

    Numbered components (``layers.0.``) are never wrapper prefixes and are left out.
    """
    found = set()
    for name in names:
        parts = name.split(".")[:-1][:PREFIX_DEPTH]
        for depth, part in enumerate(parts, 1):
            if part.isdigit():
                break
            found.add(".".join(parts[:depth]) + ".")
    return sorted(found)


def _score(mapping: dict[str, str], model_names: set[str]) -> int:
    return sum(v in model_names for v in mapping.values())
