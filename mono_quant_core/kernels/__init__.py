"""Kernel selection for quantized Linear (fbgemm dynamic int8, static int8 x int8 through oneDNN / fbgemm,
int8/int4 weight packs, dequantize fallback) and static convolutions (oneDNN int8); see select.py."""

from __future__ import annotations

from .base import LinearKernel
from .select import DEQUANTIZE, LINEAR_KERNELS, UPCAST, fallback_for, select_linear_kernel

__all__ = ["DEQUANTIZE", "LINEAR_KERNELS", "UPCAST", "LinearKernel", "fallback_for", "select_linear_kernel"]
