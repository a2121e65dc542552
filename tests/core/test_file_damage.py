"""A damaged calibration file or checkpoint is described in plain words, named, and never half-read."""

from __future__ import annotations

import os
import zipfile

import numpy as np
import pytest
import torch

from mono_quant_core.errors import CalibrationError, CheckpointError
from mono_quant_core.loading import load_calibration
from mono_quant_core.loading.checkpoint_files import open_checkpoint
from mono_quant_core.loading.file_damage import describe_damage


def _torch_file(path, cut=None, legacy=False):
    torch.save({"w": torch.arange(64, dtype=torch.float32)}, path, _use_new_zipfile_serialization=not legacy)
    if cut is not None:
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // cut])


def _zip_of_text(path):
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("notes.txt", "not tensors")


CASES = [
    ("empty.pt", lambda p: p.write_bytes(b""), "the file is empty (0 bytes)"),
    (
        "text.pt",
        lambda p: p.write_text("hello\n" * 20),
        "not a file written by torch.save (it is neither a zip archive nor a pickle)",
    ),
    (
        "cut.pt",
        lambda p: _torch_file(p, cut=2),
        "a damaged or truncated torch.save archive, or a zip file torch.save did not write",
    ),
    ("other.pt", _zip_of_text, "a damaged or truncated torch.save archive, or a zip file torch.save did not write"),
    (
        "legacy.pt",
        lambda p: _torch_file(p, cut=2, legacy=True),
        "a damaged or truncated torch.save file in the legacy pickle format",
    ),
    ("short.safetensors", lambda p: p.write_bytes(b"abc"), "too short for a safetensors file (3 bytes)"),
]


@pytest.mark.parametrize("name, write, problem", CASES)
def test_damaged_checkpoints_are_described_in_plain_words(tmp_path, name, write, problem):
    write(tmp_path / name)
    with pytest.raises(CheckpointError) as info:
        open_checkpoint(tmp_path / name)
    message = str(info.value)
    assert message.startswith(f"{name}: not a readable ") and problem in message
    # The readers' internals stay out of the message (they remain in the exception chain).
    for internal in ("pop from empty list", "miniz", "enforce fail", "EOFError", "Check the documentation"):
        assert internal not in message


CALIBRATION_CASES = [
    *CASES,
    (
        "text.npy",
        lambda p: p.write_bytes(os.urandom(64).replace(b"\x93", b"x")),
        "not a NumPy .npy file (it does not start with the .npy header)",
    ),
    (
        "objects.npy",
        lambda p: np.save(p, np.array([{"a": 1}], dtype=object), allow_pickle=True),
        "refused: it holds pickled Python objects (a NumPy object array)",
    ),
    ("text.npz", lambda p: p.write_text("hello"), "not a NumPy .npz archive (it is not a zip file)"),
]


@pytest.mark.parametrize("name, write, problem", CALIBRATION_CASES)
def test_damaged_calibration_files_are_described_in_plain_words(tmp_path, name, write, problem):
    folder = tmp_path / "calib"
    folder.mkdir()
    write(folder / name)
    before = (folder / name).read_bytes()
    samples = load_calibration(folder, check=False)  # read lazily: each damage met by the reader itself
    with pytest.raises(CalibrationError) as info:
        samples[0]
    message = str(info.value)
    assert message.startswith(f"{name}: unreadable: ") and problem in message
    assert (folder / name).read_bytes() == before  # the user's file is untouched


def test_a_file_the_system_will_not_read_says_why(tmp_path):
    """An OS error (no permission, an I/O error) is named as such, not as a damaged file.
    (The tests run as root here, where chmod cannot refuse a read: the error is given directly.)"""
    path = tmp_path / "locked.pt"
    _torch_file(path)
    assert describe_damage(path, PermissionError(13, "Permission denied")) == "cannot be read (Permission denied)"
    assert describe_damage(path, OSError(5, "Input/output error")) == "cannot be read (Input/output error)"
    assert describe_damage(tmp_path / "gone.pt", EOFError()) == "cannot be read (No such file or directory)"
