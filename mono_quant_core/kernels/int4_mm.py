"""int4 weight-only Linear through ``torch._weight_int4pack_mm_for_cpu`` with bf16 activations.

The op dequantizes ``w = (c - 8) * scale + zero`` per group of 32/64/128/256
input features, with ``c`` the unsigned code.  Symmetric codes are stored as
``c = q + 8`` (zero = 0); asymmetric ``w = (c - zp) * s = (c - 8) * s + (8 - zp) * s``.
Per-channel and per-tensor weights become groups with repeated scales.  The
packing op needs out_features to be a multiple of 16.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from ..tensor import QuantSpec, unpack_int4
from .base import LinearKernel, aligned, float_bias, on_cpu, weight_qparams

if TYPE_CHECKING:
    from ..modules.linear import QuantizedLinear

    #: Packed weight, op group size, ``[groups, n, 2]`` bf16 scales and zeros, float32 bias.
    Int4State = tuple[torch.Tensor, int, torch.Tensor, torch.Tensor | None]

GROUP_SIZES = (256, 128, 64, 32)


def _op_group_size(spec: QuantSpec, k: int) -> int | None:
    if spec.granularity == "per-group":
        return spec.group_size if spec.group_size in GROUP_SIZES and k % spec.group_size == 0 else None
    return next((g for g in GROUP_SIZES if k % g == 0), None)


class Int4PackMM(LinearKernel):
    name = "int4pack-bf16"

    def available(self) -> bool:
        return hasattr(torch, "_weight_int4pack_mm_for_cpu") and hasattr(
            torch.ops.aten, "_convert_weight_to_int4pack_for_cpu"
        )

    def supports(self, module: QuantizedLinear) -> bool:
        spec = module.spec
        return (
            spec is not None
            and spec.dtype == "int4"
            and on_cpu(module)
            and module.out_features % 16 == 0
            and _op_group_size(spec, module.in_features) is not None
        )

    def pack(self, module: QuantizedLinear) -> Int4State:
        spec = module.spec
        n, k = module.out_features, module.in_features
        assert spec is not None  # pack runs only on a module supports() accepted (an int4 spec)
        group = _op_group_size(spec, k)
        assert group is not None  # supports() checked that the op takes this layer's groups
        codes = unpack_int4(module.weight, k).to(torch.int32).contiguous()  # unsigned codes, [n, k]
        packed = torch.ops.aten._convert_weight_to_int4pack_for_cpu(codes, 1)
        groups = k // group
        per_group = spec.granularity == "per-group"

        def by_group(t: torch.Tensor) -> torch.Tensor:  # [n, groups], repeating per-channel / per-tensor values
            t = t.to(torch.float32)
            return t.reshape(n, groups) if per_group else t.reshape(-1, 1).expand(n, groups)

        weight_scale, zp = weight_qparams(module)
        scale = by_group(weight_scale)
        zero = torch.zeros_like(scale) if zp is None else (8.0 - by_group(zp)) * scale
        scale_zeros = torch.stack((scale, zero), dim=-1).transpose(0, 1).contiguous().to(torch.bfloat16)
        return packed, group, scale_zeros, float_bias(module)

    def run(self, state: Int4State, x: torch.Tensor) -> torch.Tensor:
        packed, group, scale_zeros, bias = state
        y = torch._weight_int4pack_mm_for_cpu(aligned(x.to(torch.bfloat16)), packed, group, scale_zeros)
        y = y.to(torch.float32)
        if bias is not None:
            y = y + bias
        return y.to(x.dtype)
