"""SQNR in dB: the formula, float64 sums, inf for identical tensors."""

from __future__ import annotations

import math

import pytest
import torch

from mono_quant_core.tensor import sqnr_db


def test_known_value():
    x = torch.tensor([3.0, 4.0])
    assert sqnr_db(x, x + torch.tensor([0.5, 0.0])) == 10 * math.log10(25 / 0.25)  # 20 dB


def test_identical_and_zero():
    x = torch.randn(10)
    assert sqnr_db(x, x.clone()) == math.inf
    assert sqnr_db(torch.zeros(3), torch.zeros(3)) == math.inf
    assert sqnr_db(torch.zeros(3), torch.ones(3)) == -math.inf


def test_float64_accumulation():
    # 1e7 float16 elements whose squares overflow float16 and lose precision in one float32 sum:
    # float32 within 1M-value slices, float64 across them keeps the error below 1e-5 dB.
    x = torch.full((10_000_000,), 300.0, dtype=torch.float16)
    xhat = x + 0.25
    assert abs(sqnr_db(x, xhat) - 10 * math.log10(300.0**2 / 0.25**2)) < 1e-5


def test_large_tensors_are_compared_in_slices_with_the_same_result():
    """Above CHUNK values the sums are taken slice by slice (float32 within a slice, float64
    across); they agree with one-shot float64 sums to 1e-6 relative (1e-5 dB)."""
    import math

    from mono_quant_core.tensor.sqnr import CHUNK

    g = torch.Generator().manual_seed(3)
    x = torch.randn(3 * CHUNK + 17, generator=g).reshape(-1, 1)
    x_hat = x + 0.01 * torch.randn(x.shape, generator=g)
    ref, err = x.double(), x.double() - x_hat.double()
    expected = 10 * math.log10(float(ref.square().sum()) / float(err.square().sum()))
    assert sqnr_db(x, x_hat) == pytest.approx(expected, abs=1e-5)
    assert sqnr_db(x.double(), x_hat.double()) == pytest.approx(expected, rel=1e-12)
    with pytest.raises(ValueError, match="SQNR of tensors of"):
        sqnr_db(x, x_hat[:-1])
