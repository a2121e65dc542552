"""Weight-only (and static) int8 Linear through ``torch._weight_int8pack_mm`` with bf16 activations.

The op computes ``x_bf16 @ q.T * s`` in bf16.  Unit scales are passed and the
float32 scale applied afterwards (bf16 scales would add a per-channel gain
error); asymmetric weights subtract the zero-point term
``y = s * (x @ q.T) - (s * zp) * sum(x)`` with the same bf16-rounded ``x``.
A float32 input is never passed to the op (it is very slow there).  From
``BLOCKWISE_ROWS`` input rows on, the op is slower than float32, so large
batches dequantize the weight block by block and multiply in the input's
dtype instead (as fast as float32, and exact float numerics).  On CPU the
op crashes or returns wrong values unless in_features is a multiple of 16
(torch 2.13), so other layers use the fallback; and every operand
must be 64-byte aligned (``base.aligned``).
"""

from __future__ import annotations

import weakref
from typing import TYPE_CHECKING

import torch

from .base import LinearKernel, aligned, float_bias, on_cpu, per_channel, weight_qparams
from .fallback import Dequantize

if TYPE_CHECKING:
    from ..modules.linear import QuantizedLinear

    #: Weight codes, unit bf16 scales, float32 scale, scale x zero point (None: symmetric), bias, the module.
    Int8State = tuple[
        torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor | None, weakref.ref[QuantizedLinear]
    ]

#: Batches with at least this many rows use the blockwise float path.
BLOCKWISE_ROWS = 256


class Int8PackMM(LinearKernel):
    name = "int8pack-bf16"

    def available(self) -> bool:
        return hasattr(torch, "_weight_int8pack_mm")

    def supports(self, module: QuantizedLinear) -> bool:
        spec = module.spec
        return (
            spec is not None
            and module.mode in ("weight-only", "static")
            and spec.dtype == "int8"
            and spec.granularity in ("per-channel", "per-tensor")
            and module.in_features % 16 == 0
            and on_cpu(module)
        )

    def pack(self, module: QuantizedLinear) -> Int8State:
        q = aligned(module.weight)
        ones = torch.ones(module.out_features, dtype=torch.bfloat16)
        weight_scale, weight_zero_point = weight_qparams(module)
        scale = per_channel(weight_scale, module).to(torch.float32).contiguous()
        zp = per_channel(weight_zero_point, module)
        zp = None if zp is None else zp.to(torch.float32).contiguous()
        scaled_zp = None if zp is None else (scale * zp).contiguous()
        return q, ones, scale, scaled_zp, float_bias(module), weakref.ref(module)

    def run(self, state: Int8State, x: torch.Tensor) -> torch.Tensor:
        q, ones, scale, scaled_zp, bias, module = state
        if x.shape[0] >= BLOCKWISE_ROWS:
            return Dequantize().run(module, x)  # exact float numerics, as fast as float32
        xb = aligned(x.to(torch.bfloat16))
        y = torch._weight_int8pack_mm(xb, q, ones).to(torch.float32) * scale
        if scaled_zp is not None:
            y = y - xb.to(torch.float32).sum(-1, keepdim=True) * scaled_zp
        if bias is not None:
            y = y + bias
        return y.to(x.dtype)
