"""``dequantize``: a plain float model from a quantized one."""

from __future__ import annotations

from torch import nn

from ..modules.base import QuantizedModule
from ..structure import set_submodule, shallow_clone


def dequantize(model: nn.Module) -> nn.Module:
    """A new module tree with every quantized module replaced by its ``to_float()``; ``model`` is untouched."""
    clone = shallow_clone(model)
    if isinstance(clone, QuantizedModule):
        return clone.to_float()
    made: dict[int, nn.Module] = {}  # a module shared under two names stays shared
    replaced: set[str] = set()
    for name, module in list(clone.named_modules(remove_duplicate=False)):
        if not isinstance(module, QuantizedModule):
            continue
        parts = name.split(".")
        if any(".".join(parts[:i]) in replaced for i in range(1, len(parts))):
            continue
        if id(module) not in made:
            made[id(module)] = module.to_float()
        set_submodule(clone, name, made[id(module)])
        replaced.add(name)
    return clone
