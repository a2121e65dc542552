"""The three ONNX quantization patterns, as autograd Functions with a ``symbolic`` for torch's exporter.

Each ``forward`` computes in torch what mono-quant's own modules compute (so
the traced values and shapes are the quantized model's); each ``symbolic``
writes the ONNX nodes a QDQ runtime reads instead of the float ops that
``forward`` would trace into:

- :class:`DequantizeWeight`: ``DequantizeLinear(codes, scale[, zero_point])``
  on integer codes (an initializer), per tensor, per axis (``axis``) or
  blocked (``axis`` with ``block_size``, opset 21);
- :class:`QuantizeDequantize`: ``QuantizeLinear`` then ``DequantizeLinear``
  with a static (calibrated) int8 scale and zero point;
- :class:`DynamicQuantizeDequantize`: ``DynamicQuantizeLinear`` (uint8, this
  tensor's own min/max range widened to 0) then ``DequantizeLinear``: the
  grid of mono-quant's dynamic mode shifted by 128 (same scale, zero point + 128).
"""

from __future__ import annotations

from typing import Any

import torch

from ..tensor import fake_quantize
from ..tensor.activations import activation_qparams


def dequantize_codes(
    codes: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor | None, axis: int | None, block_size: int
) -> torch.Tensor:
    """Float32 values of ``codes`` as ONNX's ``DequantizeLinear`` defines them (``block_size`` 0: not blocked)."""
    q = codes.to(torch.float32)
    zp = None if zero_point is None else zero_point.to(torch.float32)
    if block_size and axis is not None:
        # Blocked along ``axis`` (1 here: codes are [rows, fan_in], scales [rows, ceil(fan_in / block)]).
        n = q.shape[axis]
        s = scale.repeat_interleave(block_size, dim=axis).narrow(axis, 0, n)
        zp = None if zp is None else zp.repeat_interleave(block_size, dim=axis).narrow(axis, 0, n)
    elif axis is not None:
        view = [1] * q.dim()
        view[axis] = -1
        s = scale.reshape(view)
        zp = None if zp is None else zp.reshape(view)
    else:
        s = scale
    return (q if zp is None else q - zp) * s


class DequantizeWeight(torch.autograd.Function):
    """``(codes - zero_point) * scale``; exported as one ``DequantizeLinear`` node."""

    @staticmethod
    def forward(
        ctx: Any,
        codes: torch.Tensor,
        scale: torch.Tensor,
        zero_point: torch.Tensor | None,
        axis: int | None,
        block_size: int,
    ) -> torch.Tensor:
        return dequantize_codes(codes, scale, zero_point, axis, block_size)

    @staticmethod
    def symbolic(
        g: Any, codes: Any, scale: Any, zero_point: Any, axis: int | None, block_size: int
    ) -> Any:  # pragma: no cover - run by torch.onnx.export's tracer
        inputs = [codes, scale] if zero_point is None else [codes, scale, zero_point]
        attrs: dict[str, int] = {}
        if axis is not None:
            attrs["axis_i"] = axis
        if block_size:
            attrs["block_size_i"] = block_size
        return g.op("DequantizeLinear", *inputs, **attrs)


class QuantizeDequantize(torch.autograd.Function):
    """Static activations: ``x`` on the calibrated int8 grid; exported as ``QuantizeLinear`` + ``DequantizeLinear``."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor) -> torch.Tensor:
        return fake_quantize(x, scale.reshape(1), zero_point.reshape(1).to(torch.int32))

    @staticmethod
    def symbolic(g: Any, x: Any, scale: Any, zero_point: Any) -> Any:  # pragma: no cover - run by the tracer
        q = g.op("QuantizeLinear", x, scale, zero_point)
        return g.op("DequantizeLinear", q, scale, zero_point)


class DynamicQuantizeDequantize(torch.autograd.Function):
    """Dynamic activations: ``x`` on its own int8 grid; exported as ``DynamicQuantizeLinear`` + ``DequantizeLinear``."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        return fake_quantize(x, *activation_qparams(x))

    @staticmethod
    def symbolic(g: Any, x: Any) -> Any:  # pragma: no cover - run by the tracer
        q, scale, zero_point = g.op("DynamicQuantizeLinear", x, outputs=3)
        return g.op("DequantizeLinear", q, scale, zero_point)


__all__ = [
    "DequantizeWeight",
    "DynamicQuantizeDequantize",
    "QuantizeDequantize",
    "dequantize_codes",
]
