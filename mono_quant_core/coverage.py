"""Weight coverage: how much of a model's weight the quantized layers hold, and what stayed float and why.

Weight bytes are the float model's parameter bytes, each parameter counted
once however many modules share it.  A parameter is quantized when every
module holding it is inside a quantized layer: a layer's twin replaces its
whole subtree (a MultiheadAttention's ``out_proj`` included) and its biases
count with it.  A tensor also held by a module that stays float (a tied
embedding) is float: the float copy stays in the quantized model.  Buffers
(BatchNorm running statistics) are not weights.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from torch import nn

from .report import SkippedLayer, coverage_text


def _inside(name: str, layers: set[str]) -> str | None:
    """The quantized layer ``name`` is (or is inside), or None."""
    if "" in layers:
        return ""
    parts = name.split(".") if name else []
    for i in range(len(parts), 0, -1):
        prefix = ".".join(parts[:i])
        if prefix in layers:
            return prefix
    return None


def _reason(name: str, reasons: dict[str, str]) -> str:
    """Why module ``name`` stayed float: its own skip reason, else its nearest listed ancestor's."""
    if name in reasons:
        return reasons[name]
    parts = name.split(".") if name else []
    for i in range(len(parts) - 1, -1, -1):
        ancestor = ".".join(parts[:i])
        if ancestor in reasons:
            return f"inside {ancestor or 'the model'}, which stays float: {reasons[ancestor]}"
    return "not chosen for quantization"


def weight_coverage(model: nn.Module, skipped: Iterable[SkippedLayer], quantized: Iterable[str]) -> dict[str, Any]:
    """``{"quantized_weight_bytes", "float_weight_bytes", "share", "float": [{"name", "type", "bytes",
    "reason"}]}`` of float ``model`` once the layers named in ``quantized`` are quantized.

    ``skipped``: the layers left float with their reasons (the selection's, and those kept float
    by overrides).  ``share``: quantized / all weight bytes (None for a model without weights).
    ``float`` lists every module that holds parameters directly and stays float, largest first.
    """
    layers = set(quantized)
    reasons = {s.name: s.reason for s in skipped}
    holders: dict[int, tuple[int, bool]] = {}  # id(parameter) -> (bytes, held by a float module)
    listed: set[int] = set()  # parameters already in a float module's bytes
    float_modules: list[dict[str, Any]] = []
    for name, module in model.named_modules():
        params = [p for p in module._parameters.values() if p is not None]
        if not params:
            continue
        is_float = _inside(name, layers) is None
        own = 0
        for p in params:
            size = p.numel() * p.element_size()
            seen = holders.get(id(p))
            holders[id(p)] = (size, is_float or (seen is not None and seen[1]))
            if is_float and id(p) not in listed:
                listed.add(id(p))
                own += size
        if is_float:
            float_modules.append(
                {"name": name, "type": type(module).__name__, "bytes": own, "reason": _reason(name, reasons)}
            )
    total = sum(size for size, _ in holders.values())
    kept = sum(size for size, is_float in holders.values() if is_float)
    float_modules.sort(key=lambda row: -row["bytes"])
    return {
        "quantized_weight_bytes": total - kept,
        "float_weight_bytes": kept,
        "share": (total - kept) / total if total else None,
        "float": float_modules,
    }


def share_line(coverage: dict[str, Any]) -> str | None:
    """``"coverage: 98.7 % of weight bytes quantized (float: 3 LayerNorm, 1 Embedding)"`` or None."""
    text = coverage_text(coverage)
    return None if text is None else f"coverage: {text}"
