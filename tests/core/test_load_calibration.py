"""Calibration folders: formats, order, subsets, laziness, errors (found before any work, or lazily)."""

from __future__ import annotations

import hashlib
import re

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from mono_quant_core.batches import as_call_args
from mono_quant_core.errors import CalibrationError, ConfigError
from mono_quant_core.loading import CalibrationSet, load_calibration


class TwoInputs(nn.Module):
    def forward(self, x, y=None):
        return x.sum() + (0 if y is None else 10 * y.sum())


def run(batch):
    args, kwargs = as_call_args(batch)
    return float(TwoInputs()(*args, **kwargs))


def test_every_format_and_how_it_is_passed(tmp_path):
    x, y = torch.arange(6.0).reshape(2, 3), torch.ones(2, 3)
    torch.save(x, tmp_path / "a1.pt")
    torch.save((x, y), tmp_path / "a2.pth")
    torch.save([x, y], tmp_path / "a3.pt")
    torch.save({"x": x, "y": y}, tmp_path / "a4.pt")
    save_file({"x": x, "y": y}, tmp_path / "a5.safetensors")
    np.save(tmp_path / "a6.npy", x.numpy())
    np.savez(tmp_path / "a7.npz", x=x.numpy(), y=y.numpy())
    np.savez(tmp_path / "a8.npz", x.numpy(), y.numpy())  # positional: arr_0, arr_1
    np.save(tmp_path / "a9.npy", x.double().numpy())
    # Mixed layouts in one folder are refused by the check (test_load_calibration_unusable); read as they are:
    samples = load_calibration(tmp_path, check=False)
    assert [p.name for p in samples.files] == [
        f"a{i}.{e}" for i, e in enumerate(["pt", "pth", "pt", "pt", "safetensors", "npy", "npz", "npz", "npy"], 1)
    ]
    batches = list(samples)
    assert isinstance(batches[0], torch.Tensor) and torch.equal(batches[0], x)
    assert isinstance(batches[1], tuple) and isinstance(batches[2], tuple)  # list -> tuple
    assert isinstance(batches[3], dict) and isinstance(batches[4], dict) and isinstance(batches[6], dict)
    assert isinstance(batches[7], tuple) and torch.equal(batches[7][1], y)
    assert batches[5].dtype == torch.float32 and batches[8].dtype == torch.float64
    # tensor: positional; tuple/list: positional; dict: keywords.
    assert [run(b) for b in batches] == [15.0, 75.0, 75.0, 75.0, 75.0, 15.0, 75.0, 75.0, 15.0]


def test_natural_order_and_ignored_entries(tmp_path):
    for name in ["x10.pt", "x2.pt", "X3.npy", "x1.safetensors", "x20.npz"]:
        (tmp_path / name).write_bytes(b"")
    for name in ["readme.txt", ".hidden.pt", "weights.onnx"]:
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "sub.pt").mkdir()
    samples = load_calibration(tmp_path, check=False)  # the files are empty: only their names count here
    assert [p.name for p in samples.files] == ["x1.safetensors", "x2.pt", "X3.npy", "x10.pt", "x20.npz"]
    assert samples.folder == tmp_path.resolve() and samples.folder_count == 5


def make_folder(folder, count):
    folder.mkdir(exist_ok=True)
    for i in range(count):
        torch.save(torch.full((1, 2), float(i)), folder / f"s{i}.pt")
    return folder


def test_first_n_and_seeded_subsets(tmp_path):
    folder = make_folder(tmp_path / "c", 30)
    first = load_calibration(folder, samples=4)
    assert [p.name for p in first.files] == ["s0.pt", "s1.pt", "s2.pt", "s3.pt"]
    a = load_calibration(folder, samples=8, seed=0)
    b = load_calibration(folder, samples=8, seed=0)
    c = load_calibration(folder, samples=8, seed=1)
    assert a.files == b.files and a.files != c.files and len(c) == 8
    indices = [int(p.stem[1:]) for p in a.files]
    assert indices == sorted(indices) and indices != list(range(8))
    assert [float(t[0, 0]) for t in a] == [float(i) for i in indices]
    assert len(load_calibration(folder, samples=100)) == 30
    for bad in (0, -3, 2.5, True):
        with pytest.raises(ConfigError, match="samples: must be a positive whole number"):
            load_calibration(folder, samples=bad)


def test_sequence_behaviour_and_file_list_hash(tmp_path):
    folder = make_folder(tmp_path / "c", 5)
    samples = load_calibration(folder)
    assert len(samples) == 5 and torch.equal(samples[-1], torch.full((1, 2), 4.0))
    sub = samples[1:3]
    assert isinstance(sub, CalibrationSet) and [p.name for p in sub.files] == ["s1.pt", "s2.pt"]
    with pytest.raises(IndexError):
        samples[5]
    digest = hashlib.sha256()
    for p in samples.files:
        digest.update(f"{p.name}\0{p.stat().st_size}\n".encode())
    assert samples.file_list_sha256() == digest.hexdigest() == load_calibration(folder).file_list_sha256()
    assert load_calibration(folder, samples=4).file_list_sha256() != samples.file_list_sha256()


def test_files_are_read_only_when_accessed(tmp_path):
    folder = make_folder(tmp_path / "c", 3)
    (folder / "s1.pt").write_bytes(b"corrupt")
    samples = load_calibration(folder, check=False)  # no error yet: nothing read
    assert torch.equal(samples[0], torch.zeros(1, 2))
    with pytest.raises(CalibrationError, match=r"s1.pt: unreadable"):
        samples[1]
    torch.save(torch.ones(1), folder / "s1.pt")  # fixed on disk: the next access sees it
    assert torch.equal(samples[1], torch.ones(1))


def test_folder_errors(tmp_path):
    with pytest.raises(CalibrationError, match="missing: calibration folder not found"):
        load_calibration(tmp_path / "missing")
    (tmp_path / "file.pt").write_bytes(b"")
    with pytest.raises(CalibrationError, match=r"file\.pt: not a folder"):
        load_calibration(tmp_path / "file.pt")
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("hi")
    with pytest.raises(
        CalibrationError,
        match=r"empty: no calibration files; supported: \*.pt, \*.pth, "
        r"\*.safetensors, \*.npy, \*.npz",
    ):
        load_calibration(empty)


@pytest.mark.parametrize(
    "name, write, message",
    [
        ("bad.pt", lambda p: p.write_bytes(b"garbage"), r"bad.pt: unreadable: not a file written by torch.save"),
        (
            "bad.safetensors",
            lambda p: p.write_bytes(b"\x05\x00\x00\x00\x00\x00\x00\x00{bad}"),
            r"bad.safetensors: unreadable: not a valid safetensors file \(",
        ),
        ("bad.npz", lambda p: p.write_bytes(b"PK not really"), r"bad.npz: unreadable: not a NumPy .npz archive"),
        (
            "bad.npy",
            lambda p: p.write_bytes(b"\x93NUMPY broken"),
            r"bad.npy: unreadable: a damaged or truncated .npy file",
        ),
        ("text.pt", lambda p: torch.save("hello", p), r"text.pt: holds a str, not a tensor"),
        ("num.pt", lambda p: torch.save({"x": torch.ones(1), "n": 3}, p), r"num.pt \[n\]: holds a int, not a tensor"),
        ("mixed.pt", lambda p: torch.save([torch.ones(1), None], p), r"mixed.pt \[1\]: holds a NoneType"),
        ("empty.pt", lambda p: torch.save({}, p), r"empty.pt: holds an empty dict"),
        ("strings.npy", lambda p: np.save(p, np.array(["a", "b"])), r"strings.npy: holds a numpy array of <U1"),
        (
            "nan.pt",
            lambda p: torch.save(torch.tensor([1.0, float("nan"), float("inf")]), p),
            r"nan.pt: contains 1 NaN and 1 Inf values",
        ),
        (
            "inf.safetensors",
            lambda p: save_file({"ids": torch.ones(2, dtype=torch.long), "x": torch.tensor([float("-inf")])}, p),
            r"inf.safetensors \[x\]: contains 0 NaN and 1 Inf values",
        ),
        ("nan.npz", lambda p: np.savez(p, a=np.array([np.nan])), r"nan.npz \[a\]: contains 1 NaN and 0 Inf"),
    ],
)
def test_file_errors_name_the_file(tmp_path, name, write, message):
    write(tmp_path / name)
    refused = f"{re.escape(str(tmp_path))}: 1 calibration file cannot be used: {message}"
    with pytest.raises(CalibrationError, match=refused):
        load_calibration(tmp_path)  # found before any sample is used
    samples = load_calibration(tmp_path, check=False)
    with pytest.raises(CalibrationError, match=f"^{message}"):
        samples[0]  # or when the sample is read


def test_model_rejecting_a_shape_names_the_file(tmp_path):
    torch.save(torch.ones(2, 5), tmp_path / "wide.pt")
    with pytest.raises(
        CalibrationError,
        match=r"wide.pt: the model rejected this sample \(input \[2, 5\] "
        r"float32\): RuntimeError: mat1 and mat2 shapes cannot be multiplied",
    ):
        load_calibration(tmp_path).dry_run(nn.Linear(4, 3))
    torch.save({"z": torch.ones(2, 4)}, tmp_path / "wide.pt")
    with pytest.raises(CalibrationError, match=r"TypeError: .*unexpected keyword argument 'z'"):
        load_calibration(tmp_path).dry_run(nn.Linear(4, 3))
