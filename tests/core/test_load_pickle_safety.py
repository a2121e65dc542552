"""Checkpoints and calibration files that carry pickled code are refused, and the code never runs."""

from __future__ import annotations

import os
import pickle
import textwrap

import numpy as np
import pytest
import torch

from mono_quant_core.errors import CalibrationError, CheckpointError
from mono_quant_core.loading import load_calibration, load_model


class SystemPayload:
    """Unpickling this would run a shell command that creates ``path``."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (os.system, (f"touch '{self.path}'",))


class OpenPayload(SystemPayload):
    """Unpickling this would create ``path`` with ``open(path, "w")``."""

    def __reduce__(self):
        return (open, (self.path, "w"))


@pytest.fixture
def script(tmp_path):
    path = tmp_path / "net.py"
    path.write_text(
        textwrap.dedent("""
        from torch import nn
        class Net(nn.Module):
            def __init__(self):
                super().__init__()
                self.fc = nn.Linear(2, 2)
    """)
    )
    return path


def weights():
    return {"fc.weight": torch.ones(2, 2), "fc.bias": torch.zeros(2)}


@pytest.mark.parametrize(
    "payload_type, suffix, legacy",
    [
        (SystemPayload, ".pt", False),
        (OpenPayload, ".bin", False),
        (SystemPayload, ".pth", True),
        (OpenPayload, ".ckpt", True),
    ],
)
def test_payload_in_checkpoint_never_runs(script, tmp_path, payload_type, suffix, legacy):
    marker = tmp_path / "pwned"
    ckpt = tmp_path / f"evil{suffix}"
    torch.save(
        {"state_dict": weights(), "extra": payload_type(marker)}, ckpt, _use_new_zipfile_serialization=not legacy
    )
    with pytest.raises(CheckpointError) as err:
        load_model(script, ckpt)
    assert not marker.exists()
    text = str(err.value)
    assert text.startswith(f"evil{suffix}: refused: loading it would need the pickled object")
    assert f"pickled object {'posix.system' if payload_type is SystemPayload else 'io.open'}," in text
    assert "weights_only=True" in text and "torch.save(model.state_dict(), path)" in text


def test_raw_pickle_file_never_runs(script, tmp_path):
    marker = tmp_path / "pwned"
    ckpt = tmp_path / "raw.pt"
    # Protocol 2 is what torch's own legacy files use (others make torch warn).
    ckpt.write_bytes(pickle.dumps(SystemPayload(marker), protocol=2))
    with pytest.raises(
        CheckpointError, match=r"raw\.pt: refused: loading it would need the pickled object posix\.system"
    ):
        load_model(script, ckpt)
    assert not marker.exists()


def test_whole_module_checkpoint_is_refused_with_resave_advice(script, tmp_path):
    torch.save(torch.nn.Linear(2, 2), tmp_path / "module.pt")
    with pytest.raises(
        CheckpointError,
        match=r"pickled object torch.nn.modules.linear.Linear.*"
        r"torch.save\(model.state_dict\(\), path\)",
    ):
        load_model(script, tmp_path / "module.pt")


def test_payload_in_calibration_files_never_runs(tmp_path):
    marker = tmp_path / "pwned"
    calib = tmp_path / "calib"
    calib.mkdir()
    torch.save({"x": torch.ones(2), "evil": SystemPayload(marker)}, calib / "0.pt")
    np.save(calib / "1.npy", np.array([OpenPayload(marker)], dtype=object), allow_pickle=True)
    samples = load_calibration(calib, check=False)  # read lazily: the payload met by the reader itself
    with pytest.raises(CalibrationError, match=r"0.pt: refused: reading it would need the pickled object posix.system"):
        samples[0]
    with pytest.raises(CalibrationError, match=r"1.npy: unreadable"):
        samples[1]
    assert not marker.exists()
