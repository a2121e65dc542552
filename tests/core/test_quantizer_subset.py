"""The calibration / validation subsets ``quantize`` hands on are full sequences (slices included)."""

from __future__ import annotations

from mono_quant_core.quantizer import _Subset


def test_a_subset_indexes_and_slices_like_a_sequence():
    subset = _Subset(["a", "b", "c", "d"], [3, 1, 2])
    assert len(subset) == 3 and subset[0] == "d" and subset[-1] == "c"
    assert list(subset) == ["d", "b", "c"]
    assert list(subset[1:]) == ["b", "c"]
    assert list(subset[::-1]) == ["c", "b", "d"]
    assert len(subset[5:]) == 0
