"""Kernel selection for quantized Linear: fbgemm dynamic int8, int8/int4 weight packs, dequantize fallback."""

from __future__ import annotations

from .base import LinearKernel
from .select import DEQUANTIZE, LINEAR_KERNELS, UPCAST, fallback_for, select_linear_kernel

__all__ = ["DEQUANTIZE", "LINEAR_KERNELS", "UPCAST", "LinearKernel", "fallback_for", "select_linear_kernel"]
