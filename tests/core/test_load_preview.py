"""Calibration previews: per-file summaries, problems collected, and the model dry run."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from mono_quant_core.errors import CalibrationError
from mono_quant_core.loading import preview_calibration


class Outputs(nn.Module):
    """Returns the structure named by ``kind`` so each output form can be described."""

    def __init__(self, kind):
        super().__init__()
        self.kind = kind
        self.fc = nn.Linear(3, 2)

    def forward(self, x):
        y = self.fc(x)
        if self.kind == "tuple":
            return y, (y.sum(), 7)
        if self.kind == "dict":
            return {"logits": y, "hidden": x}
        if self.kind == "model_output":
            return FakeModelOutput(last_hidden_state=y, pooler_output=y[:, 0])
        return y


class FakeModelOutput(dict):
    """Duck-types transformers' ModelOutput: a dict with ``to_tuple``."""

    def to_tuple(self):
        return tuple(self.values())


@pytest.fixture
def folder(tmp_path):
    torch.save(torch.tensor([[1.0, -2.0, 4.0], [0.0, 0.0, 0.0]]), tmp_path / "b1.pt")
    np.savez(tmp_path / "b2.npz", ids=np.array([[1, 2, 3]], dtype=np.int64), x=np.ones((1, 3), np.float32))
    torch.save(torch.tensor([[1.0, float("nan"), float("inf")]]), tmp_path / "b10.pt")
    (tmp_path / "b11.pt").write_bytes(b"broken")
    return tmp_path


def test_preview_summarises_every_file(folder):
    preview = preview_calibration(folder)
    assert (preview.file_count, preview.selected, preview.capped) == (4, 4, False)
    assert [f.name for f in preview.files] == ["b1.pt", "b2.npz", "b10.pt", "b11.pt"]
    first = preview.files[0].tensors[0]
    assert (first.key, first.shape, first.dtype) == ("", [2, 3], "float32")
    assert (first.min, first.max, first.mean, first.nan, first.inf) == (-2.0, 4.0, 0.5, 0, 0)
    ids, _x = preview.files[1].tensors
    assert (ids.key, ids.dtype, ids.min, ids.max, ids.mean) == ("ids", "int64", 1.0, 3.0, 2.0)
    assert preview.files[1].passed_as == "keywords" and preview.files[0].passed_as == "positional"
    bad = preview.files[2].tensors[0]
    assert (bad.nan, bad.inf, bad.min, bad.max) == (1, 1, 1.0, 1.0)  # stats over finite values
    assert preview.files[2].error == "b10.pt: contains 1 NaN and 1 Inf values"
    assert preview.files[3].error.startswith("b11.pt: unreadable") and preview.files[3].tensors == []
    # b2 passes keywords where the other readable file passes one tensor: it cannot be used either.
    assert preview.files[1].error == (
        "b2.npz: does not match the other files: it holds ids int64 2-d, x float32 2-d; 1 of 2 files hold float32 2-d"
    )
    assert len(preview.errors) == 3 and not preview.ok
    assert preview.usable == 1 and [name for name, _ in preview.unusable] == ["b2.npz", "b10.pt", "b11.pt"]
    assert preview.usability() == "1 of 4 files usable · 3 cannot be used"


def test_rows_for_a_table_and_json(folder):
    preview = preview_calibration(folder)
    rows = preview.to_rows()
    assert [(r["file"], r["key"]) for r in rows] == [
        ("b1.pt", ""),
        ("b2.npz", "ids"),
        ("b2.npz", "x"),
        ("b10.pt", ""),
        ("b11.pt", None),
    ]
    assert rows[0]["shape"] == [2, 3] and rows[4]["error"].startswith("b11.pt")
    assert rows[0]["unusable"] is None and rows[3]["unusable"] == "contains 1 NaN and 1 Inf values"
    data = json.loads(json.dumps(preview.to_dict()))
    assert data["file_count"] == 4 and len(data["errors"]) == 3
    assert data["usable"] == 1 and data["unusable"][1] == ["b10.pt", "contains 1 NaN and 1 Inf values"]


def test_cap_and_subset(folder):
    capped = preview_calibration(folder, max_files=2)
    assert capped.capped and len(capped.files) == 2 and capped.selected == 4
    assert "first 2 previewed" in capped.summary()
    subset = preview_calibration(folder, samples=2, seed=3)
    assert subset.selected == 2 and subset.file_count == 4 and len(subset.files) == 2


@pytest.mark.parametrize(
    "kind, structure, outputs",
    [
        ("tensor", "tensor", [("", [2, 2], "float32")]),
        ("tuple", "tuple", [("0", [2, 2], "float32"), ("1.0", [], "float32"), ("1.1", None, "int")]),
        ("dict", "dict", [("logits", [2, 2], "float32"), ("hidden", [2, 3], "float32")]),
        (
            "model_output",
            "ModelOutput (FakeModelOutput)",
            [("last_hidden_state", [2, 2], "float32"), ("pooler_output", [2], "float32")],
        ),
    ],
)
def test_dry_run_describes_the_output(tmp_path, kind, structure, outputs):
    torch.save(torch.ones(2, 3), tmp_path / "x.pt")
    preview = preview_calibration(tmp_path, model=Outputs(kind))
    assert preview.dry_run_error is None
    assert (preview.dry_run_structure, preview.dry_run_outputs) == (structure, outputs)


def test_dry_run_errors_are_captured(tmp_path):
    torch.save(torch.ones(2, 5), tmp_path / "x.pt")
    preview = preview_calibration(tmp_path, model=Outputs("tensor"))
    assert preview.dry_run_structure is None
    assert preview.dry_run_error.startswith("x.pt: the model rejected this sample (input [2, 5] float32)")
    assert "mat1 and mat2 shapes cannot be multiplied" in preview.dry_run_error
    assert preview.errors == [preview.dry_run_error]


def test_the_dry_run_takes_the_first_usable_file(folder):
    (folder / "b1.pt").write_bytes(b"broken")
    preview = preview_calibration(folder, model=Outputs("tensor"))
    assert preview.dry_run_error == (
        "b2.npz: the model rejected this sample (input ids: [1, 3] int64, x: [1, 3] float32): "
        "TypeError: Outputs.forward() got an unexpected keyword argument 'ids'"
    )
    assert preview.files[1].error == preview.dry_run_error and preview.usable == 0
    assert preview.errors.count(preview.dry_run_error) == 1
    torch.save(torch.ones(2, 3), folder / "b1.pt")
    fixed = preview_calibration(folder, model=Outputs("tensor"))
    assert (fixed.dry_run_file, fixed.dry_run_structure, fixed.dry_run_error) == ("b1.pt", "tensor", None)


def test_no_dry_run_when_no_file_can_be_used(tmp_path):
    (tmp_path / "a.pt").write_bytes(b"broken")
    preview = preview_calibration(tmp_path, model=Outputs("tensor"))
    assert preview.dry_run_error == "no dry run: no file can be used (see above)"
    assert preview.usable == 0 and preview.usability() == "0 of 1 files usable · 1 cannot be used"


def test_missing_folder_still_raises(tmp_path):
    with pytest.raises(CalibrationError, match="calibration folder not found"):
        preview_calibration(tmp_path / "nope")
