"""Forward pre-hooks that feed each named layer's input activation to an observer.

The observed activation is the layer's first input — what static mode
quantizes: the input of Linear / Conv, the sequence of LSTM / GRU (its
``PackedSequence.data`` when packed; the ``hx`` state is ignored).  Inputs
that are not floating point (Embedding's indices) are not observed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn
from torch.nn.utils.rnn import PackedSequence

from ..errors import CalibrationError
from .base import Observer


def first_input(args: tuple, kwargs: dict) -> torch.Tensor | None:
    """The floating-point tensor a layer's first input carries, or None."""
    if args:
        value: Any = args[0]
    elif "input" in kwargs:
        value = kwargs["input"]
    else:
        value = next(iter(kwargs.values()), None)
    if isinstance(value, PackedSequence):
        value = value.data
    if isinstance(value, torch.Tensor) and value.is_floating_point():
        return value
    return None


def _observe_into(observer: Observer) -> Callable:
    def hook(module: nn.Module, args: tuple, kwargs: dict) -> None:
        x = first_input(args, kwargs)
        if x is not None:
            observer.update(x)

    return hook


@contextmanager
def observed_inputs(
    model: nn.Module, layer_names: list[str], make: Callable[[], Observer]
) -> Iterator[dict[str, Observer]]:
    """Attach one observer per named layer for the ``with`` block; yields ``{name: observer}``.

    Every hook is removed when the block ends, whether it returns or raises
    (``Cancelled`` included).  An unknown name is a ``CalibrationError``.
    """
    modules: dict[str, nn.Module] = {}
    for name in dict.fromkeys(layer_names):
        try:
            modules[name] = model.get_submodule(name)
        except AttributeError:
            raise CalibrationError(f"layer_names: the model has no module named {name!r}") from None
    observers = {name: make() for name in modules}
    handles = []
    try:
        for name, module in modules.items():
            handles.append(module.register_forward_pre_hook(_observe_into(observers[name]), with_kwargs=True))
        yield observers
    finally:
        for handle in handles:
            handle.remove()
