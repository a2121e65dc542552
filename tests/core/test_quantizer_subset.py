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


def test_a_static_run_names_the_calibration_file_the_model_failed_on(tmp_path):
    """Held-out samples shift positions: the error names the file, not a position in the subset."""
    import pytest
    import torch
    from torch import nn

    from mono_quant_core import QuantConfig, load_calibration, quantize
    from mono_quant_core.errors import CalibrationError

    for i in range(10):
        torch.save(torch.randn(2, 7 if i == 6 else 16), tmp_path / f"x{i}.pt")
    model = nn.Sequential(nn.Linear(16, 8)).eval()
    with pytest.raises(CalibrationError, match=r"\(x6\.pt\): the model raised RuntimeError"):
        quantize(model, QuantConfig(mode="static"), calibration=load_calibration(tmp_path))
