"""Forward pre-hooks that feed each named layer's input activation to an observer.

The observed activation is the layer's first input — what static mode
quantizes: the input of Linear / Conv, the sequence of LSTM / GRU (its
``PackedSequence.data`` when packed; the ``hx`` state is ignored).  Inputs
that are not floating point (Embedding's indices) are not observed.

``nn.MultiheadAttention`` quantizes four inputs, one per projection: query,
key, value and the attention output entering ``out_proj``, which exists only
inside its forward.  Its observer (:class:`ProjectionInputs`) has one part per
projection; a forward hook runs the call's float attention again with the
projections' inputs observed (one extra attention per call, during
calibration only), and its range is four ranges, ``[4]`` tensors.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, cast

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


class ProjectionInputs(Observer):
    """The inputs of an attention's four projections (``modules.attention.PROJECTIONS`` order)."""

    kind = "projection inputs"

    def __init__(self, make: Callable[[], Observer]) -> None:
        from ..modules.attention import PROJECTIONS

        self.parts = [make() for _ in PROJECTIONS]

    @property
    def observed(self) -> bool:
        return all(part.observed for part in self.parts)

    def update(self, x: torch.Tensor) -> None:
        raise CalibrationError("projection inputs: observed through observe(), one part per projection")

    def observe(self, i: int, x: torch.Tensor) -> None:
        if x.is_floating_point():
            self.parts[i].update(x)

    def min_max(self, qmin: int = -128, qmax: int = 127) -> tuple[torch.Tensor, torch.Tensor]:
        """``([4] lo, [4] hi)``: query, key, value, out_proj input."""
        ranges = [part.min_max(qmin, qmax) for part in self.parts]
        return torch.stack([lo.reshape(()) for lo, _ in ranges]), torch.stack([hi.reshape(()) for _, hi in ranges])


def _observe_attention(observer: ProjectionInputs) -> Callable:
    from ..modules.attention import observe_projection_inputs

    def hook(module: nn.Module, args: tuple, kwargs: dict, output: Any) -> None:
        observe_projection_inputs(cast(nn.MultiheadAttention, module), args, kwargs, observer.observe)

    return hook


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
    observers: dict[str, Observer] = {}
    handles = []
    try:
        for name, module in modules.items():
            if isinstance(module, nn.MultiheadAttention):
                attention = ProjectionInputs(make)
                observers[name] = attention
                handles.append(module.register_forward_hook(_observe_attention(attention), with_kwargs=True))
            else:
                observers[name] = make()
                handles.append(module.register_forward_pre_hook(_observe_into(observers[name]), with_kwargs=True))
        yield observers
    finally:
        for handle in handles:
            handle.remove()
