"""QuantizedConv1d/2d/3d and QuantizedConvTranspose1d/2d: convolutions with quantized (or cast) weights.

There is no int8 convolution kernel here: the weight is dequantized per call
(a small cost next to the convolution itself, which reuses every weight
across all output positions).  Dynamic mode rounds each batch of inputs to
its own per-tensor int8 grid, static mode to the calibrated one, so the
outputs match what an int8 runtime would compute.

A transposed convolution's weight is laid out ``[in, out / groups, k...]``:
its per-channel scales run along axis 1, the output channels (with
``groups > 1`` each scale serves the same channel of every group); per-group
scales group the flattened ``[in, out / groups · k...]`` rows as for any weight.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar, cast

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


_TRANSPOSE_HYPER = (*_HYPER, "output_padding")


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

    #: The hyperparameters copied from the float module.
    hyper: ClassVar[tuple[str, ...]] = _HYPER

    def __init__(self, float_module: nn.Module, **settings: Any) -> None:
        super().__init__(**settings)
        for name in type(self).hyper:
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


class QuantizedConvTransposeNd(QuantizedConvNd):
    """Shared code of the transposed convolution replacements (zero padding only, as in torch)."""

    hyper = _TRANSPOSE_HYPER
    #: Per-channel scales run along the output channels: axis 1 of ``[in, out / groups, k...]``.
    channel_axis: ClassVar[int] = 1
    spatial_dims: ClassVar[int]
    output_padding: tuple[int, ...]

    @classmethod
    def _settings(cls, config: QuantConfig) -> dict[str, Any]:
        return {**super()._settings(config), "axis": cls.channel_axis}

    def to_float(self) -> nn.Module:
        """A plain float32 transposed convolution with the dequantized weight."""
        m = self.float_type(
            self.in_channels,
            self.out_channels,
            self.kernel_size,
            stride=self.stride,
            padding=self.padding,
            output_padding=self.output_padding,
            groups=self.groups,
            bias=self.bias is not None,
            dilation=self.dilation,
            padding_mode=self.padding_mode,
            device="meta",
        )
        m.weight = nn.Parameter(self.dequantized_weight())
        if self.bias is not None:
            m.bias = nn.Parameter(self.bias.detach().to(torch.float32))
        return m

    def forward(self, x: torch.Tensor, output_size: list[int] | None = None) -> torch.Tensor:
        self.kernel = "dequantize" if self.spec is not None else "upcast"
        # torch's own rule for ``output_size`` (it reads only ``self.output_padding``).
        output_padding = nn.modules.conv._ConvTransposeNd._output_padding(
            cast(Any, self),
            x,
            output_size,
            list(self.stride),
            list(cast(tuple[int, ...], self.padding)),
            list(self.kernel_size),
            self.spatial_dims,
            list(self.dilation),
        )
        x = self.quantize_input(x)
        w = self.dequantized_weight("weight", x.dtype)
        b = self.float_tensor("bias", x.dtype)
        conv = type(self).conv_fn
        return conv(x, w, b, self.stride, self.padding, output_padding, self.groups, self.dilation)


class QuantizedConvTranspose1d(QuantizedConvTransposeNd):
    float_type = nn.ConvTranspose1d
    conv_fn = staticmethod(F.conv_transpose1d)
    spatial_dims = 1


class QuantizedConvTranspose2d(QuantizedConvTransposeNd):
    float_type = nn.ConvTranspose2d
    conv_fn = staticmethod(F.conv_transpose2d)
    spatial_dims = 2
