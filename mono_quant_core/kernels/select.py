"""Pick the fastest available kernel for a quantized Linear, pack it once, fall back cleanly."""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F

from ..tensor import sqnr_db
from .base import LinearKernel
from .fallback import Dequantize, Upcast
from .fbgemm_dynamic import FbgemmDynamic
from .int4_mm import Int4PackMM
from .int8_mm import Int8PackMM

if TYPE_CHECKING:
    from ..modules.linear import QuantizedLinear

DEQUANTIZE = Dequantize()
UPCAST = Upcast()
#: In order of preference; the last two always apply.
LINEAR_KERNELS: tuple[LinearKernel, ...] = (FbgemmDynamic(), Int8PackMM(), Int4PackMM(), UPCAST, DEQUANTIZE)
#: A packed kernel must reproduce the dequantized layer on a probe input this well
#: (bf16 activations give about 50 dB, 8-bit dynamic activations about 38 dB; a wrong op about 0).
PROBE_MIN_SQNR_DB = 25.0
_PROBE_ROWS = 16


def fallback_for(module: QuantizedLinear) -> LinearKernel:
    """The kernel that always works for ``module``."""
    return UPCAST if module.spec is None else DEQUANTIZE


def _agrees(kernel: LinearKernel, state: Any, module: QuantizedLinear) -> bool:
    """Run the packed kernel on a fixed probe and compare a few outputs with the dequantized weight."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, module.in_features, generator=g).to(module.weight.device)
    rows = min(_PROBE_ROWS, module.out_features)
    y = kernel.run(state, x)[:, :rows]
    bias = module.float_tensor("bias", torch.float32)
    reference = F.linear(x, module.dequantized_rows("weight", 0, rows), None if bias is None else bias[:rows])
    return y.shape == reference.shape and sqnr_db(reference, y) >= PROBE_MIN_SQNR_DB


def select_linear_kernel(module: QuantizedLinear) -> tuple[str, tuple[LinearKernel, object]]:
    """``(name, (kernel, state))`` of the first kernel that is available, applies, packs and agrees."""
    for kernel in LINEAR_KERNELS[:-2]:
        if not kernel.supports(module):
            continue
        try:
            if not kernel.available():
                continue
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                state = kernel.pack(module)
            if not _agrees(kernel, state, module):
                continue
        except (AttributeError, RuntimeError, NotImplementedError):
            continue  # an op missing or refusing this layer: try the next kernel
        return kernel.name, (kernel, state)
    kernel = fallback_for(module)
    return kernel.name, (kernel, kernel.pack(module))
