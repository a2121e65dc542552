"""Dynamic int8 Linear through fbgemm (``torch.ops.quantized.linear_dynamic``), CPU only.

fbgemm quantizes each batch of activations per tensor (asymmetric, 8 bits)
and multiplies in int8.  Its packing op takes only a qint8 tensor, torch's
deprecated quantized tensors: :func:`.base.qint8_weight` makes it, and where
it cannot the kernel refuses the layer.
"""

from __future__ import annotations

import functools
import warnings
from typing import TYPE_CHECKING

import torch

from .base import LinearKernel, float_bias, on_cpu, per_channel, plain_codes, qint8_weight, weight_qparams

if TYPE_CHECKING:
    from ..modules.linear import QuantizedLinear


def _prepack(
    q: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor, bias: torch.Tensor | None
) -> torch.ScriptObject:
    qweight = qint8_weight(q, scale, zero_point)
    if qweight is None:
        raise RuntimeError("this torch has no qint8 tensors for fbgemm's packing op")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
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
    try:
        packed = _prepack(q, scale, torch.zeros(2, dtype=torch.int8), None)
    except (RuntimeError, NotImplementedError, AttributeError):
        return True  # cannot tell: assume saturation (7-bit dynamic; no static int8 kernels)
    x = torch.full((1, k), 255.0)
    x[0, 0] = 0.0  # activation range [0, 255]: every other code is 255
    y = torch.ops.quantized.linear_dynamic(x, packed, False)
    exact = x @ q.to(torch.float32).T
    return not torch.allclose(y, exact, rtol=1e-3, atol=1.0)


def _unpack(packed: torch.ScriptObject) -> torch.Tensor:
    """The int8 codes of a pack, read back from fbgemm's layout (a new plain int8 tensor)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        qweight, _ = torch.ops.quantized.linear_unpack(packed)
        return plain_codes(qweight, torch.int8)


@functools.cache
def unpack_exact() -> bool:
    """Whether this torch gives a pack's codes back exactly (its layout, zero points and a
    ragged shape included), checked once per process; without it a layer keeps its own codes."""
    if not hasattr(torch.ops.quantized, "linear_unpack"):
        return False
    g = torch.Generator().manual_seed(0)
    q = torch.randint(-128, 128, (37, 75), generator=g, dtype=torch.int8)
    zero_point = torch.randint(-8, 8, (37,), generator=g, dtype=torch.int8)
    try:
        codes = _unpack(_prepack(q, torch.rand(37, generator=g) + 0.01, zero_point, None))
    except (RuntimeError, NotImplementedError, AttributeError):
        return False
    return codes.dtype == torch.int8 and codes.shape == q.shape and torch.equal(codes, q)


class FbgemmDynamic(LinearKernel):
    name = "fbgemm-dynamic"
    quantizes_input = True

    @property
    def holds_codes(self) -> bool:  # type: ignore[override]
        return unpack_exact()

    def available(self) -> bool:
        ops = torch.ops.quantized
        engines = torch.backends.quantized.supported_engines
        return (
            (
                hasattr(torch, "_empty_per_channel_affine_quantized")
                or hasattr(torch, "_make_per_channel_quantized_tensor")
            )
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

    def unpack(self, state: tuple[torch.ScriptObject, bool]) -> torch.Tensor:
        return _unpack(state[0])
