"""Signal-to-quantization-noise ratio in dB."""

from __future__ import annotations

import math

import torch

#: Values per slice: large tensors are compared slice by slice, so the
#: temporaries stay at a few MB instead of several times the tensor.
CHUNK = 1 << 20


def sqnr_sums(x: torch.Tensor, x_hat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(sum x^2, sum (x - x_hat)^2)`` accumulated in float64, as 0-d tensors on ``x``'s device (no host sync)."""
    ref = x.detach().reshape(-1)
    approx = x_hat.detach().to(device=ref.device).reshape(-1)
    if approx.numel() != ref.numel():
        raise ValueError(f"SQNR of tensors of {ref.numel()} and {approx.numel()} values")
    # Adding to an exact float64 zero leaves every sum unchanged.
    signal = noise = torch.zeros((), dtype=torch.float64, device=ref.device)
    # Per slice: squares and their sum in float32 (torch's cascade summation,
    # relative error ~1e-7 for a 1M-value slice; float64 for float64 inputs),
    # slices accumulated in float64.  Exact float64 throughout was 10x slower.
    work = torch.float64 if ref.dtype == torch.float64 else torch.float32
    for i in range(0, max(ref.numel(), 1), CHUNK):
        r = ref[i : i + CHUNK].to(work)
        e = r - approx[i : i + CHUNK].to(work)
        s = r.mul(r).sum().to(torch.float64)
        n = e.mul_(e).sum().to(torch.float64)
        signal, noise = signal + s, noise + n
    return signal, noise


def db_from_sums(signal: float, noise: float) -> float:
    """``10 log10(signal / noise)``; no error gives ``inf`` (also for a zero signal), a zero
    signal with error ``-inf``."""
    if noise == 0.0:
        return math.inf
    if signal == 0.0:
        return -math.inf
    return 10.0 * math.log10(signal / noise)


def sqnr_db(x: torch.Tensor, x_hat: torch.Tensor) -> float:
    """``10 log10(sum x^2 / sum (x - x_hat)^2)`` over all elements in float64.

    No error gives ``inf`` (also for an all-zero signal); a zero signal with
    error gives ``-inf``.
    """
    signal, noise = sqnr_sums(x, x_hat)
    return db_from_sums(float(signal), float(noise))
