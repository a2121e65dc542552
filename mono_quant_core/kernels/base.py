"""The kernel interface for quantized Linear layers, and helpers the kernels share (Linear and Conv).

torch has deprecated its quantized tensors (``quint8`` / ``qint8``).  The engine uses them only
here, only for speed on the optional int8 kernel paths, each behind ``getattr`` with a fallback:

- :func:`uint8_codes` (``torch.quantize_per_tensor``): else the engine's own rounding, the same codes;
- :func:`quint8_view` (``torch._empty_affine_quantized``): else None, and callers take their plain path;
- :func:`qint8_weight` (``torch._empty_per_channel_affine_quantized``, else a copy by
  ``torch._make_per_channel_quantized_tensor``): else None, and fbgemm's dynamic kernel, whose
  packing op takes nothing else, refuses the layer (the next kernel, or the dequantized
  reference, computes it).

Without them every layer still computes; tests delete these functions to check it.
"""

from __future__ import annotations

import warnings
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
    #: The packed kernel must reproduce the dequantized layer on the probe this well (dB):
    #: bf16 activations give about 50 dB, 8-bit dynamic activations about 38 dB, a wrong op about 0.
    probe_min_sqnr_db = 25.0
    #: Rows of the probe input.
    probe_rows = 3
    #: The packed state holds the layer's codes and :meth:`unpack` gives them back exactly, so
    #: that the layer need not keep its own copy beside the pack.
    holds_codes = False

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

    def unpack(self, state: Any) -> torch.Tensor:
        """The layer's codes, exactly as packed (only for a kernel that :attr:`holds_codes`)."""
        raise NotImplementedError(f"{self.name} does not hold the codes")


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


def static_int8_weight(module: Any) -> bool:
    """What every static int8 kernel needs of a layer: static mode, a symmetric int8 weight per
    tensor or per output channel, on the CPU, on a CPU whose int8 products cannot saturate."""
    from .fbgemm_dynamic import reduce_range_needed

    spec = module.spec
    return (
        spec is not None
        and module.mode == "static"
        and spec.dtype == "int8"
        and spec.symmetric
        and (spec.granularity == "per-tensor" or (spec.granularity == "per-channel" and spec.axis == 0))
        and module.weight.device.type == "cpu"
        and not reduce_range_needed()
    )


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


def input_qparams_uint8(module: Any) -> tuple[float, int]:
    """A static layer's calibrated activation grid as ``(scale, zero point)`` of uint8 codes.

    The file stores the grid of signed codes ``[-128, 127]`` (``input_scale``,
    ``input_zero_point``); fbgemm and oneDNN take unsigned ``[0, 255]`` codes of
    the same values: the zero point moves by 128, the scale stays.
    """
    scale = float(cast(torch.Tensor, module.input_scale).reshape(-1)[0])
    zero_point = int(cast(torch.Tensor, module.input_zero_point).reshape(-1)[0]) + 128
    if not (scale > 0.0 and scale < float("inf")) or not 0 <= zero_point <= 255:
        raise RuntimeError(f"input qparams ({scale}, {zero_point - 128}) are not a calibrated int8 grid")
    return scale, zero_point


def uint8_codes(x: torch.Tensor, scale: float, zero_point: int) -> torch.Tensor:
    """``clamp(round(x / scale) + zero_point, 0, 255)`` as a plain uint8 tensor in ``x``'s layout.

    The fast way is torch's per-tensor quantization, one vectorized pass, read as plain uint8
    codes through its own storage (``int_repr()`` would copy them, a pass that cost 4x the
    quantization itself at ResNet shapes).  torch has deprecated its quantized tensors, so that
    call is confined here and optional: where it is missing or refuses, the codes come from the
    project's own rounding (:func:`mono_quant_core.tensor.affine.float_codes`, a few passes).
    """
    quantize = getattr(torch, "quantize_per_tensor", None)
    if quantize is not None:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # the deprecation notice: this use is deliberate
                q = quantize(x.to(torch.float32), scale, zero_point, torch.quint8)
            return plain_codes(q)
        except (RuntimeError, NotImplementedError):
            pass
    return _rounded_codes(x, scale, zero_point)


def plain_codes(q: torch.Tensor, dtype: torch.dtype = torch.uint8) -> torch.Tensor:
    """The codes of torch quint8 (qint8: ``dtype=torch.int8``) tensor ``q`` as a plain tensor over
    the same storage (no copy)."""
    codes = torch.empty(0, dtype=dtype, device=q.device)
    return codes.set_(q.untyped_storage(), q.storage_offset(), q.size(), q.stride())


def quint8_view(codes: torch.Tensor, scale: float, zero_point: int) -> torch.Tensor | None:
    """uint8 ``codes`` seen as a torch quint8 tensor of ``(scale, zero_point)`` over the same storage,
    for torch's quantized ops (dequantize, max-pooling of channels-last codes); None where torch
    lacks its deprecated quantized tensors or refuses, so that callers take their plain path."""
    make = getattr(torch, "_empty_affine_quantized", None)
    if make is None:
        return None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the deprecation notice: this use is deliberate
            q = make([0], scale=scale, zero_point=zero_point, dtype=torch.quint8, device=codes.device)
            return q.set_(codes.untyped_storage(), codes.storage_offset(), codes.size(), codes.stride())
    except (RuntimeError, NotImplementedError, TypeError):
        return None


def qint8_weight(codes: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor) -> torch.Tensor | None:
    """int8 weight ``codes`` ``[out, ...]`` as a torch qint8 tensor per output channel (axis 0),
    what fbgemm's packing op takes: over the same storage where torch allows (the op reads it
    once; a copy would add one more layer of codes to the peak), else a copy; None where torch
    lacks its deprecated quantized tensors or refuses both."""
    scales, zero_points = scale.double(), zero_point.long()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the deprecation notice: this use is deliberate
        make = getattr(torch, "_empty_per_channel_affine_quantized", None)
        if make is not None and codes.is_contiguous():
            try:
                view = make([0], scales=scales, zero_points=zero_points, axis=0, dtype=torch.qint8, device=codes.device)
                return view.set_(codes.untyped_storage(), codes.storage_offset(), codes.size(), codes.stride())
            except (RuntimeError, NotImplementedError, TypeError):
                pass
        copy = getattr(torch, "_make_per_channel_quantized_tensor", None)
        if copy is not None:
            try:
                return copy(codes, scales, zero_points, 0)
            except (RuntimeError, NotImplementedError, TypeError):
                pass
    return None


def _rounded_codes(x: torch.Tensor, scale: float, zero_point: int) -> torch.Tensor:
    """:func:`uint8_codes` without torch's quantized tensors: the signed int8 grid of the file
    (zero point - 128) rounded as the dequantized reference rounds it, shifted to ``[0, 255]``."""
    from ..tensor.activations import ACT_SPEC
    from ..tensor.affine import float_codes

    s = torch.tensor(scale, dtype=torch.float32, device=x.device)
    zp = torch.tensor(zero_point - 128, dtype=torch.float32, device=x.device)
    return float_codes(x.to(torch.float32), s, zp, ACT_SPEC).add_(128).to(torch.uint8)
