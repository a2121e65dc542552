"""int4 packing: two codes per byte, low nibble first, odd counts padded, lossless."""

from __future__ import annotations

import pytest
import torch

from mono_quant_core.errors import MonoQuantError
from mono_quant_core.tensor import QuantSpec, decode, encode, pack_int4, unpack_int4


def test_nibble_order():
    packed = pack_int4(torch.tensor([1, 2, 15, 0, 7], dtype=torch.uint8))
    assert packed.dtype == torch.uint8
    assert packed.tolist() == [0x21, 0x0F, 0x07]


@pytest.mark.parametrize("shape", [(1,), (7,), (4096,), (3, 5), (16, 33), (2, 3, 9)])
def test_random_round_trip(shape):
    codes = torch.randint(0, 16, shape, generator=torch.Generator().manual_seed(sum(shape)), dtype=torch.uint8)
    packed = pack_int4(codes)
    assert packed.shape == (*shape[:-1], (shape[-1] + 1) // 2)
    assert torch.equal(unpack_int4(packed, shape[-1]), codes)


def test_out_of_range_codes_are_refused():
    with pytest.raises(MonoQuantError, match="int4 pack"):
        pack_int4(torch.tensor([3, 16]))
    with pytest.raises(MonoQuantError, match="cannot hold"):
        unpack_int4(torch.zeros(2, dtype=torch.uint8), 5)


@pytest.mark.parametrize("symmetric", [True, False])
def test_storage_offsets_symmetric_codes(symmetric):
    spec = QuantSpec("int4", symmetric, "per-channel")
    lo, hi = spec.qmin, spec.qmax
    codes = torch.randint(lo, hi + 1, (5, 3, 3), generator=torch.Generator().manual_seed(0), dtype=torch.int8)
    data = encode(codes, spec)
    assert data.shape == (5, 5) and data.dtype == torch.uint8
    assert torch.equal(decode(data, spec, codes.shape), codes)
    first = int(data[0, 0]) & 0x0F
    assert first == int(codes[0, 0, 0]) + (8 if symmetric else 0)
