"""Export twins: traceable stand-ins for mono-quant's quantized layers, built only to be exported.

A quantized layer's own ``forward`` runs a selected kernel (fbgemm, packed
int4, ...) that torch's ONNX exporter cannot trace into QDQ nodes.  Its twin
holds the same stored tensors (shared, never copied or changed, except int4
codes, which ONNX wants unpacked into its own 4-bit type) and computes the
same function from the ops in :mod:`.qdq_ops`: ``DequantizeLinear`` of the
codes, then the float op (``Gemm``/``MatMul``, ``Conv``, ``ConvTranspose``,
``Gather``), with the input quantized as the layer's mode says.
"""

from __future__ import annotations

from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import nn

from ..modules.base import QuantizedModule
from ..modules.conv import QuantizedConvNd, QuantizedConvTransposeNd, per_sample_fake_quantize
from ..modules.embedding import QuantizedEmbedding
from ..modules.linear import QuantizedLinear
from ..tensor import decode
from ..tensor.storage import int4_rows
from .qdq_ops import DequantizeWeight, DynamicQuantizeDequantize, QuantizeDequantize


class ExportWeight(nn.Module):
    """One stored weight as ``DequantizeLinear`` inputs (``codes``, ``scale``, ``zero_point``),
    or, for the fp16/bf16 casts, the cast weight and a ``Cast`` to float32.

    Per-group weights are dequantized blocked along the flattened ``[rows, fan_in]`` view (the
    layout mono-quant groups in) and reshaped back; per-channel along the layer's channel axis.
    """

    codes: torch.Tensor
    scale: torch.Tensor
    zero_point: torch.Tensor | None
    cast_weight: torch.Tensor

    def __init__(self, q: QuantizedModule, stem: str) -> None:
        super().__init__()
        self.shape = tuple(q.weight_shapes[stem])
        data: torch.Tensor = getattr(q, stem)
        spec = q.spec
        self.int4 = spec is not None and spec.dtype == "int4"
        self.axis: int | None = None
        self.block_size = 0
        self.grouped = False
        self.codes_bytes = 0
        self.is_cast = spec is None
        if spec is None:
            self.register_buffer("cast_weight", data)
            return
        scale: torch.Tensor = getattr(q, f"{stem}_scale")
        zp: torch.Tensor | None = getattr(q, f"{stem}_zero_point", None)
        codes = data if spec.dtype == "int8" else decode(data, spec, self.shape)
        if spec.granularity == "per-group":
            self.grouped = True
            codes = codes.reshape(int4_rows(self.shape))
            self.axis, self.block_size = 1, int(spec.group_size)
        elif spec.granularity == "per-channel" and len(self.shape):
            self.axis = spec.axis % len(self.shape)
            scale, zp = scale.reshape(-1), None if zp is None else zp.reshape(-1)
        else:  # per tensor: scalar qparams
            scale, zp = scale.reshape(()), None if zp is None else zp.reshape(())
        if self.int4 and zp is not None:  # asymmetric int4: codes and zero points are UINT4 in [0, 15]
            codes, zp = codes.to(torch.uint8), zp.to(torch.uint8)
        self.register_buffer("codes", codes)
        self.register_buffer("scale", scale.to(torch.float32))
        self.register_buffer("zero_point", zp)
        self.codes_bytes = (codes.numel() + 1) // 2 if self.int4 else codes.numel()

    def forward(self) -> torch.Tensor:
        if self.is_cast:
            return self.cast_weight.to(torch.float32)
        w = cast(
            torch.Tensor, DequantizeWeight.apply(self.codes, self.scale, self.zero_point, self.axis, self.block_size)
        )
        return w.reshape(self.shape) if self.grouped else w


class ExportActivation(nn.Module):
    """A layer's input as its mode quantizes it: calibrated Q/DQ (static), dynamic Q/DQ, or as is."""

    scale: torch.Tensor
    zero_point: torch.Tensor

    def __init__(self, q: QuantizedModule) -> None:
        super().__init__()
        self.mode = "weight-only" if q.cast_dtype is not None else q.mode
        # A dynamic convolution rounds each sample on its own grid (per_sample_fake_quantize):
        # exported as those same operations (ReduceMin/Max, Div, Round, Clip...), so a runtime
        # computes what mono-quant does at every batch size (DynamicQuantizeLinear has one grid).
        self.per_sample = self.mode == "dynamic" and isinstance(q, QuantizedConvNd)
        self.rank = len(q.kernel_size) + 2 if isinstance(q, QuantizedConvNd) else 0
        if self.mode == "static":
            self.register_buffer("scale", q.input_scale.detach().to(torch.float32).reshape(()).clone())
            self.register_buffer("zero_point", q.input_zero_point.detach().to(torch.int8).reshape(()).clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mode == "weight-only" or not x.is_floating_point():
            return x
        xf = x.to(torch.float32)  # ONNX quantizes float32 with float32 scales (a no-op for float32 inputs)
        if self.mode == "static":
            y = cast(torch.Tensor, QuantizeDequantize.apply(xf, self.scale, self.zero_point))
        elif self.per_sample and x.dim() == self.rank:
            y = per_sample_fake_quantize(xf)
        else:
            y = cast(torch.Tensor, DynamicQuantizeDequantize.apply(xf))
        return y if y.dtype == x.dtype else y.to(x.dtype)


def _like(t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``t`` in ``x``'s dtype (the quantized modules compute in their input's dtype); as is when it is."""
    return t if t.dtype == x.dtype else t.to(x.dtype)


def _bias(t: torch.Tensor | None, x: torch.Tensor) -> torch.Tensor | None:
    return None if t is None else _like(t, x)


class ExportLinear(nn.Module):
    """Twin of QuantizedLinear: ``x / s`` (stored SmoothQuant factors), input Q/DQ, weight DQ, ``linear``."""

    input_smoothing: torch.Tensor | None

    def __init__(self, q: QuantizedLinear) -> None:
        super().__init__()
        self.in_features, self.out_features = q.in_features, q.out_features
        self.kernel = "onnx-qdq"
        self.weight = ExportWeight(q, "weight")
        self.bias = q.bias
        self.input = ExportActivation(q)
        self.register_buffer("input_smoothing", q._buffers.get("input_smoothing"))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.input_smoothing is not None:
            x = x / self.input_smoothing.to(x.dtype)
        return F.linear(self.input(x), _like(self.weight(), x), _bias(self.bias, x))


class ExportConv(nn.Module):
    """Twin of QuantizedConv1d/2d/3d."""

    def __init__(self, q: QuantizedConvNd) -> None:
        super().__init__()
        for name in type(q).hyper:
            setattr(self, name, getattr(q, name))
        self.conv_fn = type(q).conv_fn
        self.zero_padding = type(q).zero_padding
        self.weight = ExportWeight(q, "weight")
        self.bias = q.bias
        self.input = ExportActivation(q)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.input(x)
        w, b = _like(self.weight(), x), _bias(self.bias, x)
        h: Any = self
        if h.padding_mode != "zeros":
            x = F.pad(x, h._reversed_padding_repeated_twice, mode=h.padding_mode)
            return self.conv_fn(x, w, b, h.stride, self.zero_padding, h.dilation, h.groups)
        return self.conv_fn(x, w, b, h.stride, h.padding, h.dilation, h.groups)


class ExportConvTranspose(ExportConv):
    """Twin of QuantizedConvTranspose1d/2d."""

    def __init__(self, q: QuantizedConvTransposeNd) -> None:
        super().__init__(q)
        self.spatial_dims = type(q).spatial_dims

    def forward(self, x: torch.Tensor, output_size: list[int] | None = None) -> torch.Tensor:
        h: Any = self
        output_padding = nn.modules.conv._ConvTransposeNd._output_padding(
            h,
            x,
            output_size,
            list(h.stride),
            list(h.padding),
            list(h.kernel_size),
            self.spatial_dims,
            list(h.dilation),
        )
        x = self.input(x)
        w, b = _like(self.weight(), x), _bias(self.bias, x)
        return self.conv_fn(x, w, b, h.stride, h.padding, output_padding, h.groups, h.dilation)


class ExportEmbedding(nn.Module):
    """Twin of QuantizedEmbedding: the table dequantized (``DequantizeLinear``), then ``Gather``."""

    def __init__(self, q: QuantizedEmbedding) -> None:
        super().__init__()
        self.weight = ExportWeight(q, "weight")
        self.max_norm, self.norm_type = q.max_norm, q.norm_type
        self.output_dtype = q.output_dtype

    def forward(self, indices: torch.Tensor) -> torch.Tensor:
        out = F.embedding(indices, self.weight()).to(self.output_dtype)
        if self.max_norm is not None:  # as QuantizedEmbedding: the looked-up rows are renormalised
            norms = torch.linalg.vector_norm(out, ord=self.norm_type, dim=-1, keepdim=True)
            out = out * torch.where(norms > self.max_norm, self.max_norm / (norms + 1e-7), 1.0).to(out.dtype)
        return out


def twin_for(q: QuantizedModule) -> nn.Module | None:
    """The export twin of a quantized layer, or None when there is none (the exporter refuses it)."""
    if isinstance(q, QuantizedLinear):
        return ExportLinear(q)
    if isinstance(q, QuantizedConvTransposeNd):
        return ExportConvTranspose(q)
    if isinstance(q, QuantizedConvNd):
        return ExportConv(q)
    if isinstance(q, QuantizedEmbedding):
        return ExportEmbedding(q)
    return None
