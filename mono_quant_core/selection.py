"""Which layers to quantize, and why the others are left in float.

Rules, for each layer that has a quantized replacement (any nesting depth):

1. ``config.layers`` (the GUI's ticked boxes), when given, is the whole answer:
   exactly those names are chosen, whatever the type and pattern rules say.
2. Otherwise a layer is chosen when its type is in ``include_types`` (None: all
   supported types) and not in ``exclude_types``, its name matches one of
   ``include`` (when given) and none of ``exclude``.

Patterns are globs (``encoder.*.fc1``) or, with a ``re:`` prefix, regular
expressions matched against the whole name.  A pattern that matches a
container also matches everything inside it (``exclude=["head"]``).  The
matcher is ``config.name_matcher``, torch-free, so the GUI's select box asks
the same rule.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import nn

from .config import QuantConfig, name_matcher
from .errors import ConfigError
from .modules.registry import replacement_for
from .report import SkippedLayer

# Parents that read a child's weight directly instead of calling the child:
# replacing the child would be silently ignored or break the parent.
_WEIGHT_READERS = (nn.MultiheadAttention,)


@dataclass
class Selection:
    chosen: list[str] = field(default_factory=list)
    skipped: list[SkippedLayer] = field(default_factory=list)


@dataclass
class ModuleRow:
    """One row of the module tree (pre-order, like ``named_modules``)."""

    name: str
    parent: str | None
    type: str
    params: int
    bytes: int
    quantizable: bool
    reason: str | None
    is_leaf: bool


def _type_name(t: str) -> str:
    return t.rsplit(".", 1)[-1]


def _first_match(patterns: list[str], name: str) -> str | None:
    for pattern in patterns:
        if name_matcher(pattern)(name):
            return pattern
    return None


def _blocked_by_parent(model: nn.Module) -> dict[str, str]:
    """Names of children whose weights a parent reads directly, with the reason."""
    blocked = {}
    for name, module in model.named_modules():
        if isinstance(module, _WEIGHT_READERS):
            for child_name, _ in module.named_children():
                full = f"{name}.{child_name}" if name else child_name
                blocked[full] = f"its weight is read directly by the parent {type(module).__name__}"
    return blocked


def unsupported_reason(module: nn.Module, name: str, blocked: dict[str, str]) -> str | None:
    """Why ``module`` cannot be quantized, or None when it can."""
    if name in blocked:
        return blocked[name]
    if replacement_for(module) is None:
        return f"{type(module).__name__} has no quantized replacement; kept in float"
    return None


def _has_own_params(module: nn.Module) -> bool:
    return any(p is not None for p in module._parameters.values())


def select_layers(model: nn.Module, config: QuantConfig) -> Selection:
    """Apply the rules above; returns chosen names and skipped layers with reasons."""
    blocked = _blocked_by_parent(model)
    include_types = None if config.include_types is None else {_type_name(t) for t in config.include_types}
    exclude_types = {_type_name(t) for t in config.exclude_types}
    explicit = None if config.layers is None else list(dict.fromkeys(config.layers))
    names = set()
    sel = Selection()
    for name, module in model.named_modules():
        names.add(name)
        tname = type(module).__name__
        supported = replacement_for(module) is not None
        if not supported and not _has_own_params(module):
            continue  # containers and weightless layers (ReLU, Dropout) are not layers to report
        reason = unsupported_reason(module, name, blocked)
        if reason is not None:
            sel.skipped.append(SkippedLayer(name, tname, reason))
            continue
        if explicit is not None:
            if name in explicit:
                sel.chosen.append(name)
            else:
                sel.skipped.append(SkippedLayer(name, tname, "not ticked in the layer list"))
            continue
        if include_types is not None and tname not in include_types:
            reason = f"type {tname} is not in include_types"
        elif tname in exclude_types:
            reason = f"type {tname} is in exclude_types"
        elif config.include and _first_match(config.include, name) is None:
            reason = "matches no include pattern"
        elif (pattern := _first_match(config.exclude, name)) is not None:
            reason = f"excluded by pattern {pattern!r}"
        if reason is None:
            sel.chosen.append(name)
        else:
            sel.skipped.append(SkippedLayer(name, tname, reason))
    if explicit is not None:
        unknown = [n for n in explicit if n not in names]
        if unknown:
            shown = ", ".join(unknown[:10]) + (f" and {len(unknown) - 10} more" if len(unknown) > 10 else "")
            raise ConfigError(f"layers: the model has no module named {shown}")
    return sel


def module_table(model: nn.Module) -> list[ModuleRow]:
    """Rows for a module tree view: recursive parameter counts and bytes, and what can be quantized."""
    blocked = _blocked_by_parent(model)
    entries = list(model.named_modules())
    own = {}
    for name, module in entries:
        params = sum(p.numel() for p in module.parameters(recurse=False))
        nbytes = sum(t.numel() * t.element_size() for t in module.parameters(recurse=False))
        nbytes += sum(t.numel() * t.element_size() for t in module.buffers(recurse=False))
        own[name] = [params, nbytes]
    # Sum bottom-up: children come after their parent in pre-order.
    for name, _ in reversed(entries):
        if name:
            parent = name.rpartition(".")[0]
            if parent in own:
                own[parent][0] += own[name][0]
                own[parent][1] += own[name][1]
    rows = []
    for name, module in entries:
        is_leaf = not module._modules
        reason = unsupported_reason(module, name, blocked)
        if reason is not None and replacement_for(module) is None and not _has_own_params(module):
            reason = None if not is_leaf else "no weights to quantize"
        rows.append(
            ModuleRow(
                name=name,
                parent=None if name == "" else name.rpartition(".")[0],
                type=type(module).__name__,
                params=own[name][0],
                bytes=own[name][1],
                quantizable=unsupported_reason(module, name, blocked) is None,
                reason=reason,
                is_leaf=is_leaf,
            )
        )
    return rows
