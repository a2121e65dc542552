"""QuantizedConv1d/2d/3d: convolutions with quantized (or cast) weights.

There is no int8 convolution kernel here: the weight is dequantized per call
(a small cost next to the convolution itself, which reuses every weight
across all output positions).  Dynamic mode rounds each batch of inputs to
its own per-tensor int8 grid, static mode to the calibrated one, so the
outputs match what an int8 runtime would compute.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from ..config import QuantConfig
from .base import QuantizedModule

_HYPER = (
    "in_channels",
    "out_channels",
    "kernel_size",
    "stride",
    "padding",
    "dilation",
    "groups",
    "padding_mode",
    "_reversed_padding_repeated_twice",
)


class QuantizedConvNd(QuantizedModule):
    """Shared code of the three convolution replacements."""

    #: ``F.conv1d`` / ``F.conv2d`` / ``F.conv3d``, set by each subclass.
    conv_fn: ClassVar[Callable[..., torch.Tensor]]
    zero_padding: ClassVar[tuple[int, ...]] = ()
    # Copied from the float module (_HYPER), and the tensors (declared for type checkers).
    in_channels: int
    out_channels: int
    kernel_size: tuple[int, ...]
    stride: tuple[int, ...]
    padding: str | tuple[int, ...]
    dilation: tuple[int, ...]
    groups: int
    padding_mode: str
    _reversed_padding_repeated_twice: list[int]
    weight: torch.Tensor
    bias: nn.Parameter | None

    def __init__(self, float_module: nn.Module, **settings: Any) -> None:
        super().__init__(**settings)
        for name in _HYPER:
            value = getattr(float_module, name)
            setattr(self, name, list(value) if isinstance(value, list) else value)

    @classmethod
    def from_float(cls, module: nn.Module, config: QuantConfig) -> QuantizedConvNd:
        """The quantized replacement of ``module`` (which is never modified)."""
        q = cls(module, **cls._settings(config))
        q._take_weight_and_bias(module)
        return q

    @classmethod
    def from_meta(cls, meta: dict[str, Any], float_module: nn.Module) -> QuantizedConvNd:
        """An empty replacement shaped by ``meta``, ready for ``load_state_dict``."""
        q = cls(float_module, **cls._settings_from_meta(meta))
        q._empty_weight_and_bias(meta, float_module)
        return q

    def to_float(self) -> nn.Module:
        """A plain float32 convolution with the dequantized weight."""
        m = self.float_type(
            self.in_channels,
            self.out_channels,
            self.kernel_size,
            stride=self.stride,
            padding=self.padding,
            dilation=self.dilation,
            groups=self.groups,
            bias=self.bias is not None,
            padding_mode=self.padding_mode,
            device="meta",
        )
        m.weight = nn.Parameter(self.dequantized_weight())
        if self.bias is not None:
            m.bias = nn.Parameter(self.bias.detach().to(torch.float32))
        return m

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.kernel = "dequantize" if self.spec is not None else "upcast"
        x = self.quantize_input(x)
        w = self.dequantized_weight("weight", x.dtype)
        b = self.float_tensor("bias", x.dtype)
        conv = type(self).conv_fn
        if self.padding_mode != "zeros":
            x = F.pad(x, self._reversed_padding_repeated_twice, mode=self.padding_mode)
            return conv(x, w, b, self.stride, self.zero_padding, self.dilation, self.groups)
        return conv(x, w, b, self.stride, self.padding, self.dilation, self.groups)

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
            f"stride={self.stride}, {super().extra_repr()}"
        )


class QuantizedConv1d(QuantizedConvNd):
    float_type = nn.Conv1d
    conv_fn = staticmethod(F.conv1d)
    zero_padding = (0,)


class QuantizedConv2d(QuantizedConvNd):
    float_type = nn.Conv2d
    conv_fn = staticmethod(F.conv2d)
    zero_padding = (0, 0)


class QuantizedConv3d(QuantizedConvNd):
    float_type = nn.Conv3d
    conv_fn = staticmethod(F.conv3d)
    zero_padding = (0, 0, 0)
