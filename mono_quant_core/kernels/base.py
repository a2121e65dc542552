"""The kernel interface for quantized Linear layers, and helpers the kernels share."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast, overload

import torch

if TYPE_CHECKING:
    from ..modules.linear import QuantizedLinear


class LinearKernel:
    """One compute path: ``available()``, ``supports(module)``, ``pack(module)`` once, ``run(state, x)`` often.

    ``run`` takes a 2-D input ``[rows, in_features]`` and returns ``[rows,
    out_features]`` in the input's dtype, bias added.  A kernel with
    ``quantizes_input`` quantizes activations itself (dynamic mode); otherwise
    the module has already put its input on the activation grid.  Only a
    ``differentiable`` kernel serves an input that needs gradients (the packed
    ops have no backward).
    """

    name = "abstract"
    quantizes_input = False
    differentiable = False

    def available(self) -> bool:
        """True when the ops this kernel needs exist in this torch build."""
        return True

    def supports(self, module: QuantizedLinear) -> bool:
        """True when this kernel can compute ``module`` (dtype, mode, granularity, device)."""
        raise NotImplementedError

    def pack(self, module: QuantizedLinear) -> Any:
        """Kernel state built once from the module's buffers (not part of the state dict)."""
        raise NotImplementedError

    def run(self, state: Any, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


#: Bytes of alignment that torch's CPU allocator gives every new tensor.
ALIGNMENT = 64


def aligned(t: torch.Tensor) -> torch.Tensor:
    """``t`` contiguous and starting on a 64-byte boundary (a copy only when it is not).

    ``torch._weight_int8pack_mm`` (torch 2.13, CPU) crashes the process on an
    operand that is not 64-byte aligned, e.g. a weight that is a view into a
    safetensors file buffer; fresh allocations always are.
    """
    if t.is_contiguous() and t.data_ptr() % ALIGNMENT == 0:
        return t
    return torch.empty(t.shape, dtype=t.dtype, device=t.device).copy_(t)


def on_cpu(module: QuantizedLinear) -> bool:
    return module.weight.device.type == "cpu"


def weight_qparams(module: QuantizedLinear) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The ``weight_scale`` and ``weight_zero_point`` buffers (None: symmetric)."""
    # Buffers registered by _store_weight / _empty_weight; nn.Module.__getattr__ is typed Tensor | Module.
    return cast(torch.Tensor, module.weight_scale), getattr(module, "weight_zero_point", None)


@overload
def per_channel(t: torch.Tensor, module: QuantizedLinear) -> torch.Tensor: ...
@overload
def per_channel(t: None, module: QuantizedLinear) -> None: ...
@overload
def per_channel(t: torch.Tensor | None, module: QuantizedLinear) -> torch.Tensor | None: ...
def per_channel(t: torch.Tensor | None, module: QuantizedLinear) -> torch.Tensor | None:
    """A per-tensor or per-channel scale / zero point as one value per output channel (``[out]``)."""
    if t is None:
        return None
    return t.reshape(-1).expand(module.out_features) if t.numel() == 1 else t.reshape(-1)


def float_bias(module: QuantizedLinear) -> torch.Tensor | None:
    return None if module.bias is None else module.bias.detach().to(torch.float32)
