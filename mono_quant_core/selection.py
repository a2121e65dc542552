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

# Parents that read a child's weight directly instead of calling the child: replacing the
# child alone would be silently ignored or break the parent.  When the parent itself is
# quantized its twin owns the child (MultiheadAttention's ``out_proj``).
_WEIGHT_READERS = (nn.MultiheadAttention,)
#: Types that select as another type in include_types / exclude_types.
_SELECTS_AS = {"NonDynamicallyQuantizableLinear": "Linear"}
_PART_OF = "part of the parent"
_NORMS = (
    nn.LayerNorm,
    nn.GroupNorm,
    nn.LocalResponseNorm,
    nn.RMSNorm,
    nn.modules.batchnorm._NormBase,
)


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
    #: Parameter bytes of the subtree, each parameter once (a tied weight too): the weight bytes that
    #: quantizing this layer covers (mono_quant_core.coverage; buffers are not weights).
    weight_bytes: int = 0


def _type_name(t: str) -> str:
    return t.rsplit(".", 1)[-1]


def _first_match(patterns: list[str], name: str) -> str | None:
    for pattern in patterns:
        if name_matcher(pattern)(name):
            return pattern
    return None


def _parent_name(name: str) -> str:
    return name.rpartition(".")[0]


def _blocked_by_parent(model: nn.Module) -> dict[str, str]:
    """Names of children whose weights a parent reads directly, with the reason."""
    blocked = {}
    for name, module in model.named_modules():
        if isinstance(module, _WEIGHT_READERS):
            owner = type(module).__name__
            if replacement_for(module) is not None:
                reason = f"{_PART_OF} {owner}: quantized with it"
            else:
                reason = f"its weight is read directly by the parent {owner}"
            for child_name, _ in module.named_children():
                blocked[f"{name}.{child_name}" if name else child_name] = reason
    return blocked


def unsupported_reason(module: nn.Module, name: str, blocked: dict[str, str]) -> str | None:
    """Why ``module`` cannot be quantized on its own, or None when it can."""
    if name in blocked:
        return blocked[name]
    if replacement_for(module) is None:
        if isinstance(module, _NORMS):
            return (
                f"{type(module).__name__} has no quantized replacement (norm layers stay float: "
                "few weights, and they set the scale of every activation after them)"
            )
        return f"{type(module).__name__} has no quantized replacement; kept in float"
    return None


def _covered(name: str, chosen: set[str]) -> bool:
    """Whether an ancestor of ``name`` is chosen: its twin replaces the whole subtree."""
    if not chosen or not name:
        return False
    if "" in chosen:
        return True
    parts = name.split(".")
    return any(".".join(parts[:i]) in chosen for i in range(1, len(parts)))


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
    chosen: set[str] = set()
    reasons: dict[str, str] = {}
    for name, module in model.named_modules():
        names.add(name)
        tname = type(module).__name__
        supported = replacement_for(module) is not None
        if _covered(name, chosen):
            continue  # inside a chosen layer: its twin quantizes it
        if not supported and not _has_own_params(module):
            continue  # containers and weightless layers (ReLU, Dropout) are not layers to report
        reason = unsupported_reason(module, name, blocked)
        if reason is not None:
            parent_reason = reasons.get(_parent_name(name))
            if reason.startswith(_PART_OF) and parent_reason is not None:
                owner = type(model.get_submodule(_parent_name(name))).__name__
                reason = f"{_PART_OF} {owner}, which stays float ({parent_reason})"
            sel.skipped.append(SkippedLayer(name, tname, reason))
            reasons[name] = reason
            continue
        if explicit is not None:
            if name in explicit:
                sel.chosen.append(name)
                chosen.add(name)
            else:
                sel.skipped.append(SkippedLayer(name, tname, "not ticked in the layer list"))
                reasons[name] = "not ticked in the layer list"
            continue
        tname = _SELECTS_AS.get(tname, tname)
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
            chosen.add(name)
        else:
            sel.skipped.append(SkippedLayer(name, type(module).__name__, reason))
            reasons[name] = reason
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
                weight_bytes=sum(p.numel() * p.element_size() for p in module.parameters()),
            )
        )
    return rows
