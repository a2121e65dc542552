"""Dynamic int8 Linear through fbgemm (``torch.ops.quantized.linear_dynamic``), CPU only.

fbgemm quantizes each batch of activations per tensor (asymmetric, 8 bits)
and multiplies in int8.  Packing needs a quantized tensor (deprecated API), so
it is created here only, once, with its deprecation warning suppressed.
"""

from __future__ import annotations

import functools
import warnings
from typing import TYPE_CHECKING

import torch

from .base import LinearKernel, float_bias, on_cpu, per_channel, weight_qparams

if TYPE_CHECKING:
    from ..modules.linear import QuantizedLinear


def _prepack(
    q: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor, bias: torch.Tensor | None
) -> torch.ScriptObject:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        qweight = torch._make_per_channel_quantized_tensor(q, scale.double(), zero_point.long(), 0)
        return torch.ops.quantized.linear_prepack(qweight, bias)


@functools.cache
def reduce_range_needed() -> bool:
    """Whether 8-bit activations can saturate fbgemm's int16 pair sums on this CPU.

    Without VNNI, fbgemm adds pairs of u8 x s8 products in int16 with
    saturation (2 * 255 * 127 > 32767), and torch quantizes activations to 7
    bits (``reduce_range``) to avoid it, costing about 5 dB of SQNR.  CPUs with
    VNNI accumulate in int32.  A worst-case product decides, once per process.
    """
    k = 64
    q = torch.full((2, k), -127, dtype=torch.int8)
    q[1] = 127
    scale = torch.ones(2)
    packed = _prepack(q, scale, torch.zeros(2, dtype=torch.int8), None)
    x = torch.full((1, k), 255.0)
    x[0, 0] = 0.0  # activation range [0, 255]: every other code is 255
    y = torch.ops.quantized.linear_dynamic(x, packed, False)
    exact = x @ q.to(torch.float32).T
    return not torch.allclose(y, exact, rtol=1e-3, atol=1.0)


class FbgemmDynamic(LinearKernel):
    name = "fbgemm-dynamic"
    quantizes_input = True

    def available(self) -> bool:
        ops = torch.ops.quantized
        engines = torch.backends.quantized.supported_engines
        return (
            hasattr(torch, "_make_per_channel_quantized_tensor")
            and hasattr(ops, "linear_prepack")
            and hasattr(ops, "linear_dynamic")
            and ("fbgemm" in engines or "x86" in engines)
        )

    def supports(self, module: QuantizedLinear) -> bool:
        spec = module.spec
        return (
            spec is not None
            and module.mode == "dynamic"
            and spec.dtype == "int8"
            and spec.granularity in ("per-channel", "per-tensor")
            and on_cpu(module)
        )

    def pack(self, module: QuantizedLinear) -> tuple[torch.ScriptObject, bool]:
        if torch.backends.quantized.engine not in ("fbgemm", "x86"):
            raise RuntimeError(f"quantized engine {torch.backends.quantized.engine!r} is not fbgemm/x86")
        weight_scale, weight_zero_point = weight_qparams(module)
        scale = per_channel(weight_scale, module)
        zp = per_channel(weight_zero_point, module)
        if zp is None:
            zp = torch.zeros(module.out_features, dtype=torch.int8)
        packed = _prepack(module.weight.contiguous(), scale.contiguous(), zp.contiguous(), float_bias(module))
        return packed, reduce_range_needed()

    def run(self, state: tuple[torch.ScriptObject, bool], x: torch.Tensor) -> torch.Tensor:
        packed, reduce_range = state
        y = torch.ops.quantized.linear_dynamic(x.to(torch.float32).contiguous(), packed, reduce_range)
        return y if y.dtype == x.dtype else y.to(x.dtype)
