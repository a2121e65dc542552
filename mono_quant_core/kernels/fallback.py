"""The always-available paths: the weight dequantized (or upcast) block by block, then matmul.

Converting a whole 4096 x 4096 weight per call costs 6-10x a float matmul
(a fresh 64 MiB tensor every call).  Converting blocks of rows that fit in
cache (about 8 MiB) and multiplying each block runs about as fast as float32
and keeps float32 numerics.  The blocks are written into one scratch buffer per
thread, reused by every call and layer: a fresh 8 MiB block per step is new
memory the kernel must fault in whenever the C allocator has returned it
(bf16 at batch 1 ran 4x slower than float32 that way in a mixed workload).
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from .base import LinearKernel

if TYPE_CHECKING:
    from ..modules.linear import QuantizedLinear

#: Bytes of one converted block of weight rows.
BLOCK_BYTES = 8 * 2**20

_scratch = threading.local()


def scratch(numel: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """A 1-D buffer of at least ``numel`` values, this thread's, reused by the next call: its
    contents are valid only until this thread asks again."""
    buffers = _scratch.__dict__.setdefault("buffers", {})
    key = (dtype, device)
    buf = buffers.get(key)
    if buf is None or buf.numel() < numel:
        # A normal tensor even when asked under inference mode: an inference tensor
        # cannot be written in place outside inference mode, and the next call may
        # come under no_grad or with gradients (written inside inference mode, a
        # normal tensor is fine).
        with torch.inference_mode(False):
            buf = buffers[key] = torch.empty(numel, dtype=dtype, device=device)
    return buf[:numel]


def blockwise_linear(
    x: torch.Tensor,
    weight_rows: Callable[[int, int, torch.Tensor | None], torch.Tensor],
    n: int,
    bias: torch.Tensor | None,
) -> torch.Tensor:
    """``x @ W.T + bias`` for a 2-D ``x``; ``weight_rows(i, j, out)`` writes rows ``i:j`` of ``W``
    into ``out`` (``[j - i, in]``, ``x``'s dtype) and returns them (``out=None``: a new tensor)."""
    if torch.is_grad_enabled() and x.requires_grad:
        # Autograd keeps the weight for the backward pass: a fresh one, whole (a
        # scratch block would be overwritten before then, and out= is not differentiable).
        return F.linear(x, weight_rows(0, n, None), bias)
    k = x.shape[-1]
    rows = min(n, max(16, BLOCK_BYTES // max(1, k * x.element_size())))
    block = scratch(rows * k, x.dtype, x.device).view(rows, k)
    if rows >= n:
        return F.linear(x, weight_rows(0, n, block), bias)
    out = torch.empty(n, x.shape[0], dtype=x.dtype, device=x.device)
    xt = x.T
    for i in range(0, n, rows):
        j = min(n, i + rows)
        torch.mm(weight_rows(i, j, block[: j - i]), xt, out=out[i:j])
    y = out.T
    return y if bias is None else y + bias


class Dequantize(LinearKernel):
    """Integer weights dequantized per call, block by block: correct on every device."""

    name = "dequantize"
    differentiable = True

    def supports(self, module: QuantizedLinear) -> bool:
        return module.spec is not None

    def pack(self, module: QuantizedLinear) -> weakref.ref[QuantizedLinear]:
        return weakref.ref(module)  # the module holds this state: no reference cycle

    def run(self, state: weakref.ref[QuantizedLinear], x: torch.Tensor) -> torch.Tensor:
        module = state()
        # Alive: the state is held by the module itself (its kernel cache) or by a caller that holds it.
        assert module is not None
        return blockwise_linear(
            x,
            lambda i, j, out: module.dequantized_rows("weight", i, j, x.dtype, out),
            module.out_features,
            module.float_tensor("bias", x.dtype),
        )


class Upcast(Dequantize):
    """fp16/bf16 weights (cast modes) converted to the activation dtype per call, block by block."""

    name = "upcast"

    def supports(self, module: QuantizedLinear) -> bool:
        return module.spec is None
