"""Calibration files that cannot be used are found before any work: counted by the preview, refused or
left out (and recorded) by ``load_calibration``; a model error on a validation sample names its file."""

from __future__ import annotations

import re

import pytest
import torch
from torch import nn

from mono_quant_core import QuantConfig, quantize
from mono_quant_core.errors import CalibrationError
from mono_quant_core.loading import load_calibration, preview_calibration
from mono_quant_core.report import QuantReport
from mono_quant_core.validation import record_skipped_calibration

UNREADABLE = "unreadable: not a file written by torch.save (it is neither a zip archive nor a pickle)"


class Counting(nn.Module):
    """A Linear(16, 4) that remembers the inputs it saw."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.fc = nn.Linear(16, 4)
        self.seen: list[list[int]] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.append(list(x.shape))
        return self.fc(x)


def sample(i: int, width: int = 16) -> torch.Tensor:
    return torch.randn(2, width, generator=torch.Generator().manual_seed(i))


@pytest.fixture
def folder(tmp_path):
    """Four files, the third of which cannot be read."""
    for i in (1, 2, 4):
        torch.save(sample(i), tmp_path / f"x{i}.pt")
    (tmp_path / "x3.pt").write_bytes(b"broken")
    return tmp_path


def test_the_preview_counts_an_unusable_file_as_such(folder):
    preview = preview_calibration(folder, model=Counting().eval())
    assert (preview.selected, preview.usable) == (4, 3)
    assert preview.unusable == [("x3.pt", UNREADABLE)]
    assert preview.usability() == "3 of 4 files usable · 1 cannot be used"
    assert preview.summary().splitlines()[1] == "3 of 4 files usable · 1 cannot be used"


def test_load_calibration_refuses_it_before_any_work(folder):
    with pytest.raises(CalibrationError) as caught:
        load_calibration(folder)
    assert str(caught.value) == (
        f"{folder}: 1 calibration file cannot be used: x3.pt: {UNREADABLE}; "
        "fix or remove it, or leave it out (skip_unusable=True)"
    )


def test_skip_unusable_leaves_it_out_and_records_it(folder):
    samples = load_calibration(folder, skip_unusable=True)
    assert [p.name for p in samples.files] == ["x1.pt", "x2.pt", "x4.pt"] and len(samples) == 3
    assert samples.skipped_unusable == ((folder / "x3.pt", UNREADABLE),)
    assert samples.skipped_records() == [{"file": "x3.pt", "reason": UNREADABLE}]
    assert samples[1:].skipped_unusable == samples.skipped_unusable
    assert torch.equal(samples[2], sample(4))


def test_the_report_records_the_skipped_files(folder):
    report = QuantReport()
    record_skipped_calibration(report, load_calibration(folder, skip_unusable=True))
    assert report.calibration_skipped == [{"file": "x3.pt", "reason": UNREADABLE}]
    assert report.warnings == [f"left out 1 calibration file that cannot be used: x3.pt: {UNREADABLE}"]
    again = QuantReport.from_json(report.to_json())
    assert again.calibration_skipped == report.calibration_skipped and again == report
    clean = QuantReport()
    record_skipped_calibration(clean, [torch.ones(2, 16)])  # plain samples: nothing skipped, no warning
    assert (clean.calibration_skipped, clean.warnings) == ([], [])
    assert QuantReport.from_dict({}).calibration_skipped == []  # reports written before the field


def test_a_run_on_the_skipping_set_never_reads_the_file(folder):
    model = Counting().eval()
    result = quantize(model, QuantConfig(mode="static"), calibration=load_calibration(folder, skip_unusable=True))
    assert result.report.calibration_samples + result.report.validation_samples == 3


def test_nothing_left_is_an_error(tmp_path):
    (tmp_path / "a.pt").write_bytes(b"broken")
    with pytest.raises(CalibrationError, match=rf"^{re.escape(str(tmp_path))}: no usable calibration files: a\.pt: "):
        load_calibration(tmp_path, skip_unusable=True)


def test_a_file_laid_out_unlike_the_others_cannot_be_used(tmp_path):
    for i in range(1, 4):
        torch.save(sample(i), tmp_path / f"x{i}.pt")
    torch.save(torch.ones(2, 16, dtype=torch.long), tmp_path / "x4.pt")
    torch.save({"x": sample(5)}, tmp_path / "x5.pt")
    preview = preview_calibration(tmp_path)
    assert preview.unusable == [
        ("x4.pt", "does not match the other files: it holds int64 2-d; 3 of 5 files hold float32 2-d"),
        ("x5.pt", "does not match the other files: it holds x float32 2-d; 3 of 5 files hold float32 2-d"),
    ]
    samples = load_calibration(tmp_path, skip_unusable=True)
    assert [p.name for p in samples.files] == ["x1.pt", "x2.pt", "x3.pt"]
    assert [r["file"] for r in samples.skipped_records()] == ["x4.pt", "x5.pt"]


def test_the_dry_run_covers_every_distinct_shape(tmp_path):
    """A file the model rejects is found by the preview and, given the model, by load_calibration."""
    for i in range(1, 7):
        torch.save(sample(i, 15 if i in (3, 5) else 16), tmp_path / f"x{i}.pt")
    model = Counting().eval()
    preview = preview_calibration(tmp_path, model=model)
    assert (preview.dry_run_file, preview.dry_run_error) == ("x1.pt", None)
    rejected = (
        "the model rejected this sample (input [2, 15] float32): RuntimeError: "
        "mat1 and mat2 shapes cannot be multiplied (2x15 and 16x4)"
    )
    same = f"{rejected} (dry run of x3.pt, which has the same shapes)"
    assert preview.unusable == [("x3.pt", rejected), ("x5.pt", same)]
    assert model.seen == [[2, 16], [2, 15]]  # one dry run per distinct shape
    assert len(load_calibration(tmp_path)) == 6  # without the model, the shapes cannot be judged
    with pytest.raises(CalibrationError, match=r"2 calibration files cannot be used: x3\.pt: the model rejected"):
        load_calibration(tmp_path, model=model)
    kept = load_calibration(tmp_path, model=model, skip_unusable=True)
    assert [p.name for p in kept.files] == ["x1.pt", "x2.pt", "x4.pt", "x6.pt"]


def test_a_model_error_on_a_validation_sample_names_its_file(tmp_path):
    """weight-only validates on every sample: the model's error names the file, not only its position."""
    for i in range(1, 5):
        torch.save(sample(i, 15 if i == 3 else 16), tmp_path / f"x{i}.pt")
    samples = load_calibration(tmp_path)  # same layout everywhere: only the model can tell
    with pytest.raises(
        CalibrationError,
        match=re.escape("validation sample 3 (x3.pt): the model raised RuntimeError: mat1 and mat2 shapes"),
    ) as caught:
        quantize(Counting().eval(), QuantConfig(mode="weight-only"), calibration=samples)
    assert isinstance(caught.value.__cause__, RuntimeError)
