"""Pick the fastest available kernel for a quantized Linear or convolution, pack it once, fall back cleanly.

Every packed kernel is checked once, at packing, against the dequantized
reference on a probe input (the agreement probe); a kernel whose op is
missing, refuses the layer or disagrees is skipped.  A static layer's probe
lies on its calibrated activation grid (codes spread over all 256 levels), so
the int8 kernels, which quantize their input themselves, are compared on
exactly the values they compute with.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F

from ..tensor import sqnr_db
from .base import LinearKernel
from .fallback import Dequantize, Upcast
from .fbgemm_dynamic import FbgemmDynamic
from .int4_mm import Int4PackMM
from .int8_mm import Int8PackMM
from .qconv_static import ConvKernel, OnednnStaticConv
from .qlinear_static import FbgemmStatic, OnednnStatic

if TYPE_CHECKING:
    from ..modules.base import QuantizedModule
    from ..modules.conv import QuantizedConvNd
    from ..modules.linear import QuantizedLinear

DEQUANTIZE = Dequantize()
UPCAST = Upcast()
#: In order of preference; the last two always apply.
LINEAR_KERNELS: tuple[LinearKernel, ...] = (
    FbgemmDynamic(),
    OnednnStatic(),
    FbgemmStatic(),
    Int8PackMM(),
    Int4PackMM(),
    UPCAST,
    DEQUANTIZE,
)
#: Packed convolution kernels in order of preference; without one, the module's dequantized reference.
CONV_KERNELS: tuple[ConvKernel, ...] = (OnednnStaticConv(),)
_PROBE_ROWS = 16
#: Spatial size of a convolution probe beyond the kernel's reach.
_PROBE_SPATIAL = 5
#: The refusals a packing op or probe can raise: the kernel is skipped.
_REFUSALS = (AttributeError, RuntimeError, NotImplementedError)


def fallback_for(module: QuantizedLinear) -> LinearKernel:
    """The kernel that always works for ``module``."""
    return UPCAST if module.spec is None else DEQUANTIZE


def probe_input(module: QuantizedModule, shape: tuple[int, ...]) -> torch.Tensor:
    """A fixed probe of ``shape``: on a static layer's calibrated grid (every code equally likely), else N(0, 1)."""
    g = torch.Generator().manual_seed(0)
    scale = module._buffers.get("input_scale") if module.mode == "static" else None
    if scale is None or not bool(torch.isfinite(scale).all() & (scale > 0).all()):
        return torch.randn(shape, generator=g)
    codes = torch.randint(-128, 128, shape, generator=g).to(torch.float32)
    return (codes - module.input_zero_point.float().cpu()) * scale.float().cpu()


def _agrees(kernel: LinearKernel, state: Any, module: QuantizedLinear) -> bool:
    """Run the packed kernel on a fixed probe and compare a few outputs with the dequantized weight."""
    x = probe_input(module, (kernel.probe_rows, module.in_features)).to(module.weight.device)
    rows = min(_PROBE_ROWS, module.out_features)
    y = kernel.run(state, x)[:, :rows]
    bias = module.float_tensor("bias", torch.float32)
    reference = F.linear(x, module.dequantized_rows("weight", 0, rows), None if bias is None else bias[:rows])
    return y.shape == reference.shape and sqnr_db(reference, y) >= kernel.probe_min_sqnr_db


def _first_agreeing(kernels: Sequence[Any], module: Any, agrees: Callable[[Any, Any, Any], bool]) -> tuple | None:
    """``(kernel, state)`` of the first of ``kernels`` that applies to ``module``, is available,
    packs and agrees with the module's reference on a probe; None when none does."""
    for kernel in kernels:
        if not kernel.supports(module):
            continue
        try:
            if not kernel.available():
                continue
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                state = kernel.pack(module)
                if not agrees(kernel, state, module):
                    continue
        except _REFUSALS:
            continue  # an op missing or refusing this layer: try the next kernel
        return kernel, state
    return None


def select_linear_kernel(module: QuantizedLinear) -> tuple[str, tuple[LinearKernel, object]]:
    """``(name, (kernel, state))`` of the first kernel that is available, applies, packs and agrees."""
    found = _first_agreeing(LINEAR_KERNELS[:-2], module, _agrees)
    if found is not None:
        return found[0].name, found
    kernel = fallback_for(module)
    return kernel.name, (kernel, kernel.pack(module))


def _conv_probe(module: QuantizedConvNd) -> torch.Tensor:
    reach = [d * (k - 1) + 1 for k, d in zip(module.kernel_size, module.dilation, strict=True)]
    spatial = tuple(max(_PROBE_SPATIAL, r) for r in reach)
    return probe_input(module, (2, module.in_channels, *spatial))


def _conv_agrees(kernel: ConvKernel, state: Any, module: QuantizedConvNd) -> bool:
    x = _conv_probe(module)
    y = kernel.run(state, x)
    reference = module.static_reference(x)
    return y.shape == reference.shape and sqnr_db(reference, y) >= kernel.probe_min_sqnr_db


def select_conv_kernel(module: QuantizedConvNd) -> tuple[str, tuple[ConvKernel | None, object]]:
    """``(name, (kernel, state))`` of the first packed convolution kernel that is available,
    applies, packs and agrees; ``("dequantize", (None, None))`` (the module's dequantized
    reference) when none does."""
    found = _first_agreeing(CONV_KERNELS, module, _conv_agrees)
    if found is not None:
        return found[0].name, found
    return DEQUANTIZE.name, (None, None)
