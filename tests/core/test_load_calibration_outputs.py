"""A mono-quant output saved into a calibration folder is skipped, never fed to the model."""

from __future__ import annotations

import os

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from mono_quant_core import QuantConfig, quantize, save_quantized
from mono_quant_core.errors import CalibrationError
from mono_quant_core.loading import load_calibration, preview_calibration


class Classifier(nn.Module):
    """Named like the demo: a saved output holds ``classifier.1.bias`` and friends."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.features = nn.Sequential(nn.Linear(16, 32), nn.ReLU())
        self.classifier = nn.Sequential(nn.Dropout(0.1), nn.Linear(32, 4))
        self.inputs: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.inputs.append(x)
        return self.classifier(self.features(x))


def sample(i: int) -> torch.Tensor:
    return torch.randn(2, 16, generator=torch.Generator().manual_seed(i))


@pytest.fixture
def folder(tmp_path):
    """Five calibration files, then a run's outputs saved into the same folder (both formats)."""
    data = tmp_path / "calibration"
    data.mkdir()
    for i in range(1, 6):
        torch.save(sample(i), data / f"x{i}.pt")
    result = quantize(Classifier().eval(), QuantConfig(mode="weight-only"), calibration=load_calibration(data))
    save_quantized(result, data / "x0.int8.safetensors")
    save_quantized(result, data / "x0.int8.pt")
    return data


def test_outputs_are_skipped_by_load_calibration(folder):
    samples = load_calibration(folder)
    assert [p.name for p in samples.files] == ["x1.pt", "x2.pt", "x3.pt", "x4.pt", "x5.pt"]
    assert [p.name for p in samples.skipped] == ["x0.int8.pt", "x0.int8.safetensors"]
    assert samples.folder_count == 5
    assert all(torch.equal(b, sample(i)) for i, b in enumerate(samples, 1))
    # Choosing samples counts usable files only.
    assert [p.name for p in load_calibration(folder, samples=5).files] == [f"x{i}.pt" for i in range(1, 6)]
    assert load_calibration(folder)[1:3].skipped == samples.skipped


def test_a_static_run_never_feeds_an_output_to_the_model(folder):
    model = Classifier().eval()
    result = quantize(model, QuantConfig(mode="static"), calibration=load_calibration(folder))
    assert result.report.calibration_samples == 4 and result.report.validation_samples == 1
    assert all(x.shape == (2, 16) for x in model.inputs)


def test_the_preview_lists_outputs_as_skipped(folder):
    preview = preview_calibration(folder, model=Classifier().eval())
    assert [f.name for f in preview.files] == [f"x{i}.pt" for i in range(1, 6)]
    assert [(f.name, f.skipped, f.bytes) for f in preview.skipped] == [
        ("x0.int8.pt", "a mono-quant output", os.path.getsize(folder / "x0.int8.pt")),
        ("x0.int8.safetensors", "a mono-quant output", os.path.getsize(folder / "x0.int8.safetensors")),
    ]
    assert preview.ok and preview.errors == [] and preview.file_count == 5 and preview.selected == 5
    lines = preview.summary().splitlines()
    assert lines[-2:] == [
        "x0.int8.pt: skipped: a mono-quant output",
        "x0.int8.safetensors: skipped: a mono-quant output",
    ]
    rows = preview.to_rows()
    assert [(r["file"], r["skipped"], r["error"]) for r in rows[-2:]] == [
        ("x0.int8.pt", "a mono-quant output", None),
        ("x0.int8.safetensors", "a mono-quant output", None),
    ]
    assert all(r["skipped"] is None for r in rows[:-2])
    assert preview.to_dict()["skipped"][0]["skipped"] == "a mono-quant output"


def test_a_folder_of_outputs_only_says_so(folder):
    for i in range(1, 6):
        (folder / f"x{i}.pt").unlink()
    with pytest.raises(CalibrationError) as caught:
        load_calibration(folder)
    assert str(caught.value) == (
        f"{folder}: no calibration files (skipped x0.int8.pt, x0.int8.safetensors: mono-quant outputs); "
        "supported: *.pt, *.pth, *.safetensors, *.npy, *.npz"
    )
    (folder / "x0.int8.pt").unlink()
    with pytest.raises(CalibrationError, match=r"\(skipped x0\.int8\.safetensors: a mono-quant output\)"):
        load_calibration(folder)


def test_inputs_named_like_the_marker_are_still_samples(tmp_path):
    torch.save({"mono_quant": torch.ones(2)}, tmp_path / "a.pt")
    save_file({"mono_quant": torch.ones(2)}, tmp_path / "b.safetensors", metadata={"mono_quant_note": "inputs"})
    samples = load_calibration(tmp_path)
    assert [p.name for p in samples.files] == ["a.pt", "b.safetensors"] and samples.skipped == ()
    assert torch.equal(samples[0]["mono_quant"], torch.ones(2))


class _Payload:
    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self) -> tuple:
        return (open, (self.path, "w"))


def test_checking_for_outputs_never_runs_pickled_code(tmp_path):
    ran = tmp_path / "ran"
    torch.save({"mono_quant": "{}", "x": _Payload(str(ran))}, tmp_path / "evil.pt")
    with pytest.raises(CalibrationError, match=r"cannot be used: evil\.pt: refused: reading it would need the pickled"):
        load_calibration(tmp_path)
    samples = load_calibration(tmp_path, check=False)
    assert [p.name for p in samples.files] == ["evil.pt"] and samples.skipped == ()
    with pytest.raises(CalibrationError, match=r"^evil\.pt: refused: reading it would need the pickled object"):
        samples[0]
    assert not ran.exists()
