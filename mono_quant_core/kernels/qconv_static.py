"""Static int8 convolution through oneDNN (``onednn::qconv{1,2,3}d_pointwise``), CPU only.

A static layer's input is quantized with its calibrated grid (uint8 codes, one
vectorized pass), convolved with the int8 weight packed once
(``onednn::qconv_prepack``, oneDNN's blocked layout), accumulated in int32 and
dequantized by the op into a float32 output: the x86 inductor path of
``torch.ao`` static quantization.  A float32 output needs no output grid, so
calibration records nothing more and the file stays as it is; it costs writing
float activations where ``torch.ao`` writes uint8 ones (activations are
re-quantized by the next int8 layer).

fbgemm's ``quantized::conv2d`` was not taken: it returns quantized outputs,
so it needs an output scale and zero point that calibration does not record
(and with ``torch.backends.quantized.engine = "x86"`` torch itself hands such
convolutions to oneDNN).

The op needs symmetric int8 weights (zero point 0) with per-channel scales
along the output channels (per-tensor scales are repeated), zero padding given
as numbers, and a CPU whose 8-bit products cannot saturate; any other layer,
and any input that needs gradients, uses the module's dequantized reference.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast

import torch

from .base import aligned, input_qparams_uint8, static_int8_weight, uint8_codes

if TYPE_CHECKING:
    from ..modules.conv import QuantizedConvNd

    #: ``(stride, padding, dilation, groups)`` as the op takes them.
    Geometry = tuple[list[int], list[int], list[int], int]
    #: Packed weight, weight scales and zero points, bias, geometry, the op, input scale, uint8 input zero point.
    ConvState = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None, Geometry, Any, float, int]


class ConvKernel:
    """One compute path for a quantized convolution: ``available()``, ``supports(module)``,
    ``pack(module)`` once, ``run(state, x)`` often (``x``: the float input, ``[N, C, *spatial]``;
    the result: the float output in ``x``'s dtype, bias added)."""

    name = "abstract"
    #: The packed kernel must reproduce the dequantized reference on the probe this well (dB).
    probe_min_sqnr_db = 40.0

    def available(self) -> bool:
        return True

    def supports(self, module: QuantizedConvNd) -> bool:
        raise NotImplementedError

    def pack(self, module: QuantizedConvNd) -> Any:
        raise NotImplementedError

    def run(self, state: Any, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


#: The layout oneDNN computes in.  Inputs are reordered to it as uint8 codes.  Outputs keep the
#: input's memory format, as torch's own convolutions do: a contiguous input gives a contiguous
#: output (so a model that calls ``.view`` on it works as in float), a channels-last one (the
#: model and its inputs moved with ``memory_format=torch.channels_last``) stays channels-last
#: with no reorder at all; that is the fast way, about 2.5x faster on a ResNet-18 at batch 16.
_CHANNELS_LAST = {4: torch.channels_last, 5: torch.channels_last_3d}


def _ops() -> dict[int, Any]:
    """The oneDNN pointwise convolution of each spatial rank (1, 2, 3)."""
    ops = torch.ops.onednn
    return {1: ops.qconv1d_pointwise, 2: ops.qconv2d_pointwise, 3: ops.qconv3d_pointwise}


def _spatial_rank(module: QuantizedConvNd) -> int:
    return len(module.kernel_size)


class OnednnStaticConv(ConvKernel):
    name = "onednn-qconv"

    def available(self) -> bool:
        ops = torch.ops.onednn
        return (
            torch.backends.mkldnn.is_available()
            and hasattr(ops, "qconv_prepack")
            and all(hasattr(ops, f"qconv{d}d_pointwise") for d in (1, 2, 3))
        )

    def supports(self, module: QuantizedConvNd) -> bool:
        return (
            static_int8_weight(module)
            and not hasattr(module, "output_padding")  # transposed convolutions: not this op
            and module.padding_mode == "zeros"
            and not isinstance(module.padding, str)
            and _spatial_rank(module) in (1, 2, 3)
        )

    def pack(self, module: QuantizedConvNd) -> ConvState:
        scale, zero_point = input_qparams_uint8(module)
        out = module.out_channels
        ws = cast(torch.Tensor, module.weight_scale).to(torch.float32).reshape(-1)
        ws = (ws.expand(out) if ws.numel() == 1 else ws).contiguous()
        geometry = (
            list(module.stride),
            list(cast(tuple[int, ...], module.padding)),
            list(module.dilation),
            module.groups,
        )
        packed = torch.ops.onednn.qconv_prepack(aligned(module.weight), ws, scale, zero_point, *geometry, None)
        bias = None if module.bias is None else module.bias.detach().to(torch.float32).contiguous()
        zeros = torch.zeros(out, dtype=torch.long)
        return packed, ws, zeros, bias, geometry, _ops()[_spatial_rank(module)], scale, zero_point

    def run(self, state: ConvState, x: torch.Tensor) -> torch.Tensor:
        packed, ws, zeros, bias, geometry, op, scale, zero_point = state
        codes = uint8_codes(x, scale, zero_point)
        layout = _CHANNELS_LAST.get(codes.dim())
        if layout is not None and not codes.is_contiguous(memory_format=layout):
            codes = codes.contiguous(memory_format=layout)  # the op's own layout: a reorder of bytes, not floats
        y = op(codes, scale, zero_point, packed, ws, zeros, bias, *geometry, 1.0, 0, torch.float32, "none", [], "")
        if layout is None or not x.is_contiguous(memory_format=layout):
            y = y.contiguous()  # as torch's own: Conv1d ``[N, C, L]``, a contiguous input's layout
        return y if y.dtype == x.dtype else y.to(x.dtype)
