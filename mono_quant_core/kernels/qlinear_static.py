"""Static int8 Linear computed in int8: calibrated uint8 activations times int8 weights, float32 out, CPU.

Static mode calibrates one activation grid per layer (``input_scale``,
``input_zero_point``), so the input is quantized with it in one pass and the
product runs in int8 with int32 accumulation; the output is dequantized by the
op itself (no output grid is needed, so nothing more is calibrated or stored).
Two ops do this: fbgemm's ``quantized::linear_with_input_q_dq_qweight_dq_output_fp32``
(the weight packed like the dynamic kernel's) and oneDNN's
``onednn::qlinear_pointwise`` with a float32 output (the x86 inductor path).
Both need symmetric int8 weights (zero point 0), per-channel or per-tensor,
and 8-bit pair sums that cannot saturate (VNNI; otherwise the calibrated
8-bit grid cannot be narrowed to 7 bits as dynamic mode does, so these
kernels do not apply).
"""

from __future__ import annotations

import warnings
import weakref
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import torch

from ..tensor import sqnr_db
from .base import (
    LinearKernel,
    aligned,
    float_bias,
    input_qparams_uint8,
    per_channel,
    static_int8_weight,
    uint8_codes,
    weight_qparams,
)
from .fbgemm_dynamic import _prepack

if TYPE_CHECKING:
    from ..modules.linear import QuantizedLinear

    #: fbgemm: packed weight, input scale, uint8 input zero point.
    FbgemmState = tuple[torch.ScriptObject, float, int]


class FbgemmStatic(LinearKernel):
    name = "fbgemm-static"
    quantizes_input = True
    probe_min_sqnr_db = 40.0

    def available(self) -> bool:
        ops = torch.ops.quantized
        engines = torch.backends.quantized.supported_engines
        return (
            hasattr(ops, "linear_prepack")
            and hasattr(ops, "linear_with_input_q_dq_qweight_dq_output_fp32")
            and ("fbgemm" in engines or "x86" in engines)
        )

    def supports(self, module: QuantizedLinear) -> bool:
        return static_int8_weight(module)

    def pack(self, module: QuantizedLinear) -> FbgemmState:
        if torch.backends.quantized.engine not in ("fbgemm", "x86"):
            raise RuntimeError(f"quantized engine {torch.backends.quantized.engine!r} is not fbgemm/x86")
        scale, zero_point = input_qparams_uint8(module)
        weight_scale, _ = weight_qparams(module)
        ws = per_channel(weight_scale, module).contiguous()
        zeros = torch.zeros(module.out_features, dtype=torch.int8)
        return _prepack(module.weight.contiguous(), ws, zeros, float_bias(module)), scale, zero_point

    def run(self, state: FbgemmState, x: torch.Tensor) -> torch.Tensor:
        packed, scale, zero_point = state
        op = torch.ops.quantized.linear_with_input_q_dq_qweight_dq_output_fp32
        y = op(x.to(torch.float32).contiguous(), scale, zero_point, packed)
        return y if y.dtype == x.dtype else y.to(x.dtype)


@dataclass
class OnednnState:
    """oneDNN's packed weight and what its op takes; ``small``: fbgemm's state for batches of
    fewer than ``SMALL_ROWS`` rows (None: not built yet, False: not usable)."""

    packed: torch.Tensor
    weight_scale: torch.Tensor
    weight_zero_point: torch.Tensor
    bias: torch.Tensor | None
    scale: float
    zero_point: int
    module: weakref.ref[QuantizedLinear]
    small: FbgemmState | Literal[False] | None = None


#: Batches with fewer rows run fbgemm's op (about 10 % faster than oneDNN's there, slower from 5 rows on).
SMALL_ROWS = 4
#: fbgemm's small-batch path must agree with oneDNN's op on a probe this well (both exact up to float rounding).
SMALL_PATH_MIN_SQNR_DB = 40.0


class OnednnStatic(LinearKernel):
    """oneDNN's int8 linear; batches of fewer than ``SMALL_ROWS`` rows go through fbgemm's
    static op instead, packed at the first such batch (one more packed copy of the weight, made
    only for a layer that sees small batches) after it agrees with oneDNN's on a probe."""

    name = "onednn-static"
    quantizes_input = True
    probe_min_sqnr_db = 40.0
    probe_rows = 2 * SMALL_ROWS  # oneDNN's own path (the small-batch path is probed when built)

    def available(self) -> bool:
        ops = torch.ops.onednn
        return (
            torch.backends.mkldnn.is_available()
            and hasattr(ops, "qlinear_prepack")
            and hasattr(ops, "qlinear_pointwise")
        )

    def supports(self, module: QuantizedLinear) -> bool:
        return static_int8_weight(module)

    def pack(self, module: QuantizedLinear) -> OnednnState:
        scale, zero_point = input_qparams_uint8(module)
        weight_scale, _ = weight_qparams(module)
        ws = per_channel(weight_scale, module).to(torch.float32).contiguous()
        zeros = torch.zeros(module.out_features, dtype=torch.long)
        packed = torch.ops.onednn.qlinear_prepack(aligned(module.weight), None)
        return OnednnState(packed, ws, zeros, float_bias(module), scale, zero_point, weakref.ref(module))

    def run(self, state: OnednnState, x: torch.Tensor) -> torch.Tensor:
        if x.shape[0] < SMALL_ROWS:
            small = self._small_path(state)
            if small:
                return FBGEMM_STATIC.run(small, x)
        return self._onednn(state, x)

    def _onednn(self, state: OnednnState, x: torch.Tensor) -> torch.Tensor:
        codes = uint8_codes(x, state.scale, state.zero_point)
        y = torch.ops.onednn.qlinear_pointwise(
            codes,
            state.scale,
            state.zero_point,
            state.packed,
            state.weight_scale,
            state.weight_zero_point,
            state.bias,
            1.0,
            0,
            torch.float32,
            "none",
            [],
            "",
        )
        return y if y.dtype == x.dtype else y.to(x.dtype)

    def _small_path(self, state: OnednnState) -> FbgemmState | Literal[False]:
        if state.small is None:
            state.small = False
            module = state.module()
            if module is not None and FBGEMM_STATIC.available():
                try:
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore")
                        small = FBGEMM_STATIC.pack(module)
                    probe = _grid_probe(state, module.in_features)
                    if sqnr_db(self._onednn(state, probe), FBGEMM_STATIC.run(small, probe)) >= SMALL_PATH_MIN_SQNR_DB:
                        state.small = small
                except (AttributeError, RuntimeError, NotImplementedError):
                    pass  # fbgemm missing or refusing: oneDNN serves small batches too
        return state.small


def _grid_probe(state: OnednnState, k: int) -> torch.Tensor:
    """Three rows of values on the layer's input grid, every code equally likely."""
    codes = torch.randint(0, 256, (3, k), generator=torch.Generator().manual_seed(0)).to(torch.float32)
    return (codes - state.zero_point) * state.scale


FBGEMM_STATIC = FbgemmStatic()
