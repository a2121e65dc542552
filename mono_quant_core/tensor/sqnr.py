"""Signal-to-quantization-noise ratio in dB."""

from __future__ import annotations

import math

import torch


def sqnr_db(x: torch.Tensor, x_hat: torch.Tensor) -> float:
    """``10 log10(sum x^2 / sum (x - x_hat)^2)`` over all elements in float64.

    No error gives ``inf`` (also for an all-zero signal); a zero signal with
    error gives ``-inf``.
    """
    ref = x.detach().to(torch.float64)
    err = ref - x_hat.detach().to(device=ref.device, dtype=torch.float64)
    signal, noise = float(ref.square().sum()), float(err.square().sum())
    if noise == 0.0:
        return math.inf
    if signal == 0.0:
        return -math.inf
    return 10.0 * math.log10(signal / noise)
