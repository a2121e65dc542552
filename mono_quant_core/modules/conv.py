"""QuantizedConv1d/2d/3d and QuantizedConvTranspose1d/2d: convolutions with quantized (or cast) weights.

Static mode (calibrated input grid) runs Conv1d/2d/3d through an int8 kernel
selected, packed and checked once at first forward (``kernels/qconv_static.py``,
``kernels/select.py``): the input quantized with the calibrated grid, int8
weights, int32 accumulation, a float output.  Where no kernel applies
(asymmetric or per-group weights, other padding modes, no oneDNN) static mode
and the other modes dequantize the weight per call (a small cost next to the
convolution itself, which reuses every weight across all output positions).
Dynamic mode rounds each sample of a batch to the int8 grid of its own range
(``per_sample_fake_quantize``), static mode to the calibrated one, so the
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
from ..kernels.qconv_static import ConvKernel
from ..kernels.select import select_conv_kernel
from ..tensor import ACT_QMAX, ACT_QMIN
from ..tensor.activations import activation_qparams_from_range
from .base import PENDING, QuantizedModule

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
        if self.mode == "static":
            return self._forward_static(x)  # the int8 kernel (below, "static mode")
        self.kernel = "dequantize" if self.spec is not None else "upcast"
        return self.dequantized_forward(x)

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
            f"stride={self.stride}, {super().extra_repr()}"
        )

    # -- dynamic mode: each sample on its own grid -----------------------------------------

    def quantize_input(self, x: torch.Tensor) -> torch.Tensor:
        """Dynamic mode: each sample of a batch on the int8 grid of its own range
        (:func:`per_sample_fake_quantize`); static and weight-only as every layer."""
        if self.mode == "dynamic" and x.is_floating_point() and x.numel() and x.dim() == len(self.kernel_size) + 2:
            return per_sample_fake_quantize(x)
        return super().quantize_input(x)

    # -- static mode: the packed int8 kernel (kernels/qconv_static.py) -------------------
    def _forward_static(self, x: torch.Tensor) -> torch.Tensor:
        """The calibrated layer through the int8 kernel selected and packed at first forward,
        or through the dequantized reference where none applies; the reference also serves an
        empty, integer or unbatched input and one autograd must differentiate through (the op has
        no backward): for that call only, the kernel stays for the next."""
        one_off = (
            not x.is_floating_point()
            or x.numel() == 0
            or x.dim() != len(self.kernel_size) + 2
            or (x.requires_grad and torch.is_grad_enabled())
        )
        if not one_off:
            kernel: ConvKernel | None
            kernel, state = self._cached(lambda: select_conv_kernel(self))
            if kernel is not None:
                try:
                    return kernel.run(state, x)
                except RuntimeError:
                    # The op refused this input: the reference from now on.
                    self._kernel_state = (None, None)
                    self.kernel = "dequantize"
        elif self.kernel == PENDING:
            self.kernel = "dequantize"
        return self.static_reference(x)

    def static_reference(self, x: torch.Tensor) -> torch.Tensor:
        """The dequantized reference of static mode: the input on the calibrated grid, the weight
        dequantized, a float convolution (what the int8 kernel must reproduce)."""
        return self.dequantized_forward(x)

    def dequantized_forward(self, x: torch.Tensor) -> torch.Tensor:
        """The input rounded as the mode rounds it, the weight dequantized, a float convolution."""
        x = self.quantize_input(x)
        w = self.dequantized_weight("weight", x.dtype)
        b = self.float_tensor("bias", x.dtype)
        conv = type(self).conv_fn
        if self.padding_mode != "zeros":
            x = F.pad(x, self._reversed_padding_repeated_twice, mode=self.padding_mode)
            return conv(x, w, b, self.stride, self.zero_padding, self.dilation, self.groups)
        return conv(x, w, b, self.stride, self.padding, self.dilation, self.groups)


def per_sample_fake_quantize(x: torch.Tensor) -> torch.Tensor:
    """``x`` (``[N, C, ...]``) with each sample rounded to the asymmetric int8 grid of its own
    min/max (widened to contain 0) and back, in ``x``'s dtype.

    One grid per batch would let the loudest sample set the step of every other one: a quiet
    sample next to it keeps a few codes (docs/quantization-math.md, "Dynamic convolution inputs").
    The grids factor out of the convolution sample by sample, so an int8 runtime computes the
    same (one scale and zero point per sample).  With one sample this is the per-tensor grid of
    ``tensor.activation_qparams`` and ``fake_quantize``, operation for operation.
    """
    flat = x.detach().reshape(x.shape[0], -1)
    scale, zero_point = activation_qparams_from_range(torch.amin(flat, dim=1), torch.amax(flat, dim=1))
    view = (-1,) + (1,) * (x.dim() - 1)
    s, zp = scale.reshape(view), zero_point.reshape(view).to(torch.float32)
    q = torch.div(x.to(torch.float32), s).round_().add_(zp).clamp_(ACT_QMIN, ACT_QMAX)
    return q.sub_(zp).mul_(s).to(x.dtype)


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
