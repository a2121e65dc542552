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

from .base import LinearKernel, float_bias, on_cpu, per_channel, plain_codes, weight_qparams

if TYPE_CHECKING:
    from ..modules.linear import QuantizedLinear


def _prepack(
    q: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor, bias: torch.Tensor | None
) -> torch.ScriptObject:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        qweight = _qint8_view(q, scale.double(), zero_point.long())
        if qweight is None:
            qweight = torch._make_per_channel_quantized_tensor(q, scale.double(), zero_point.long(), 0)
        return torch.ops.quantized.linear_prepack(qweight, bias)


def _qint8_view(q: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor) -> torch.Tensor | None:
    """Contiguous int8 codes ``q`` seen as a per-channel qint8 tensor over the same storage (the
    packing op reads it once; a copy would be one more layer of codes at the peak), or None where
    torch refuses (the caller copies)."""
    make = getattr(torch, "_empty_per_channel_affine_quantized", None)
    if make is None or not q.is_contiguous():
        return None
    try:
        view = make([0], scales=scale, zero_points=zero_point, axis=0, dtype=torch.qint8, device=q.device)
        return view.set_(q.untyped_storage(), q.storage_offset(), q.size(), q.stride())
    except (RuntimeError, NotImplementedError, TypeError):
        return None


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

    def unpack(self, state: tuple[torch.ScriptObject, bool]) -> torch.Tensor:
        return _unpack(state[0])
