"""Module-tree surgery without copying weights.

``shallow_clone`` gives a new tree of module objects whose parameters and
buffers are new ``Parameter``/dict objects around the *same* storage, so
replacing a submodule or reassigning ``.data`` in the clone never touches the
original model, and no weight bytes are copied.
"""

from __future__ import annotations

import copy
import itertools

import torch
from torch import nn


def _clone_module(module: nn.Module) -> nn.Module:
    new = copy.copy(module)  # shallow: a new object with the same __dict__ values
    new._parameters = {
        k: (None if p is None else nn.Parameter(p.data, requires_grad=p.requires_grad))
        for k, p in module._parameters.items()
    }
    new._buffers = dict(module._buffers)
    new._non_persistent_buffers_set = set(module._non_persistent_buffers_set)
    new._modules = {}
    # Hook dicts are shared by copy.copy; give the clone its own.
    for attr in (
        "_forward_hooks",
        "_forward_pre_hooks",
        "_backward_hooks",
        "_backward_pre_hooks",
        "_forward_hooks_with_kwargs",
        "_forward_pre_hooks_with_kwargs",
        "_forward_hooks_always_called",
        "_state_dict_hooks",
        "_state_dict_pre_hooks",
        "_load_state_dict_pre_hooks",
        "_load_state_dict_post_hooks",
    ):
        if attr in module.__dict__:
            new.__dict__[attr] = copy.copy(module.__dict__[attr])
    return new


def shallow_clone(model: nn.Module) -> nn.Module:
    """A structural copy of ``model`` sharing tensor storage (no weight bytes copied).

    Modules reached twice (weight tying by module reuse) stay shared in the clone.
    RNN modules are rebuilt so their cached flat-weight lists point at the clone's
    parameters.
    """
    return _clone_tree(model, {})


def _clone_tree(module: nn.Module, memo: dict[int, nn.Module]) -> nn.Module:
    # A plain function, not a closure: a closure that calls itself is a reference
    # cycle holding ``memo`` (every clone), which only a garbage collection frees.
    if id(module) in memo:
        return memo[id(module)]
    new = _clone_module(module)
    memo[id(module)] = new
    for name, child in module._modules.items():
        new._modules[name] = None if child is None else _clone_tree(child, memo)
    if isinstance(new, nn.RNNBase):
        new._init_flat_weights()
    return new


def model_device(model: nn.Module) -> torch.device:
    """The device of the model's first parameter or buffer that has storage (the CPU for a model
    with none: a model built without its weights, whose weights are read onto the CPU)."""
    lazy = model.__dict__.get("_mono_quant_lazy")  # loading.lazy_model.LAZY_ATTR
    if lazy is not None:
        return torch.device(lazy.device)
    tensors = itertools.chain(model.parameters(), model.buffers())
    first = next((t for t in tensors if t.device.type != "meta"), None)
    return first.device if first is not None else torch.device("cpu")


def get_submodule(root: nn.Module, name: str) -> nn.Module:
    return root.get_submodule(name) if name else root


def names_by_module(root: nn.Module) -> dict[int, list[str]]:
    """Every name each module is reachable by, keyed by ``id`` (a reused module has several)."""
    names: dict[int, list[str]] = {}
    for name, module in root.named_modules(remove_duplicate=False):
        names.setdefault(id(module), []).append(name)
    return names


def set_submodule(root: nn.Module, name: str, module: nn.Module) -> None:
    """Replace the submodule at qualified ``name`` (``a.b.0.c``)."""
    parent_name, _, leaf = name.rpartition(".")
    parent = get_submodule(root, parent_name)
    parent._modules[leaf] = module
