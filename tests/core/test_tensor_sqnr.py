"""SQNR in dB: the formula, float64 sums, inf for identical tensors."""

from __future__ import annotations

import math

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
    # 1e7 float16 elements whose squares overflow float16 and lose precision in float32 sums.
    x = torch.full((10_000_000,), 300.0, dtype=torch.float16)
    xhat = x + 0.25
    assert abs(sqnr_db(x, xhat) - 10 * math.log10(300.0 ** 2 / 0.25 ** 2)) < 1e-9
