"""Bias correction: subtract each output channel's mean quantization shift (docs/quantization-math.md).

Rounding the weights (and, in static mode, the input) changes a layer's output by
``e(x) = q(x) − f(x)``, with ``q`` the quantized twin and ``f`` the float layer.  That error has a
mean per output channel, ``E[e_c]``, which every later layer sees as a systematic shift (for a
CNN, often the largest part of the error).  Averaging ``e`` over the calibration samples and all
positions and subtracting it from the twin's bias removes that mean: ``b'_c = b_c − E[e_c]``.

The inputs are the layer's own inputs in the float model, so the correction measured is this
layer's own error, not the accumulated error of the layers before it (each layer is corrected on
its own; the corrections add up because every layer's mean shift is removed).  A layer without a
bias gets one (``quant_meta()["bias_corrected"]`` tells loading to create it).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import cast

import torch
import torch.nn.functional as F
from torch import nn

from ..modules.base import QuantizedModule
from ..modules.conv import QuantizedConvNd


def output_error(qmodule: QuantizedModule, float_module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``q(x) − f(x)`` on ``x`` (the input the weight multiplies), without the bias both add.

    Both sides are computed by the float layer's own op (``F.linear``, or the convolution's
    ``_conv_forward`` with its padding), the twin's side on its quantized input and dequantized
    weight, as its fallback kernel does: the packed kernels' own rounding (bf16 activations)
    varies with the machine and is not the quantization error the bias can correct.  Leaving the
    bias out keeps the error exactly odd in ``x`` in weight-only mode (``e(−x) = −e(x)``).
    """
    weight = cast(torch.Tensor, float_module.weight)
    xq = qmodule.quantize_input(x)
    wq = qmodule.dequantized_weight("weight", weight.dtype)
    if isinstance(float_module, nn.Linear):
        return F.linear(xq, wq) - F.linear(x, weight)
    conv = cast(nn.Conv1d, float_module)  # Conv1d/2d/3d share _conv_forward(input, weight, bias)
    return conv._conv_forward(xq, wq, None) - conv._conv_forward(x, weight, None)


def _channel_dim(qmodule: QuantizedModule, y: torch.Tensor) -> int:
    """The output-channel dimension: last for Linear, after the batch for a (batched) convolution."""
    if isinstance(qmodule, QuantizedConvNd):
        return y.dim() - len(qmodule.kernel_size) - 1
    return y.dim() - 1


def mean_shift(
    qmodule: QuantizedModule, float_module: nn.Module, inputs: Iterable[torch.Tensor]
) -> torch.Tensor | None:
    """``E[q(x) − f(x)]`` per output channel (float64) over every input and position; None without inputs.

    No module is called: their forward pre-hooks (SmoothQuant's input scale) already ran on the
    captured inputs.
    """
    total: torch.Tensor | None = None
    count = 0
    with torch.no_grad():
        for x in inputs:
            if x.numel() == 0:
                continue
            error = output_error(qmodule, float_module, x).double()
            dim = _channel_dim(qmodule, error)
            channels = error.movedim(dim, -1).reshape(-1, error.shape[dim])
            part = channels.sum(0)
            total = part if total is None else total + part
            count += channels.shape[0]
    return None if total is None or count == 0 else total / count


def correct(qmodule: QuantizedModule, float_module: nn.Module, inputs: Iterable[torch.Tensor]) -> bool:
    """Subtract the mean output shift of ``qmodule`` on ``inputs`` from its bias; whether it changed it.

    For Linear and Conv1d/2d/3d twins with int8 or int4 codes; others are left unchanged.  The new
    bias is a new tensor (the float model's bias is shared, never written) in the dtype of the
    float layer's bias, or of its weight when it had none.
    """
    if qmodule.spec is None or type(float_module) not in (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d):
        return False
    shift = mean_shift(qmodule, float_module, inputs)
    if shift is None or not bool(torch.isfinite(shift).all()) or not bool((shift != 0).any()):
        return False
    old = cast("torch.Tensor | None", qmodule._parameters.get("bias"))
    weight = cast(torch.Tensor, float_module.weight)
    dtype, device = (old.dtype if old is not None else weight.dtype), weight.device
    base = old.detach().double() if old is not None else torch.zeros_like(shift)
    new = (base - shift.to(base.device)).to(device=device, dtype=dtype)
    if old is not None and torch.equal(new, old.detach()):
        return False
    qmodule.register_parameter("bias", nn.Parameter(new, requires_grad=False))
    qmodule._kernel_key = None  # the kernels pack the bias
    return True
