"""A mono-quant output given as a float checkpoint is recognised by its metadata and refused."""

from __future__ import annotations

import os
import textwrap

import pytest
import torch

from mono_quant_core import QuantConfig, load_quantized, quantize, save_quantized
from mono_quant_core.errors import CheckpointError, QuantizedCheckpointError
from mono_quant_core.loading import load_checkpoint, load_model, open_model

SCRIPT = """
from torch import nn

class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Linear(16, 32), nn.ReLU())
        self.classifier = nn.Sequential(nn.Dropout(0.1), nn.Linear(32, 4))

    def forward(self, x):
        return self.classifier(self.features(x))
"""


@pytest.fixture
def script(tmp_path):
    path = tmp_path / "net.py"
    path.write_text(textwrap.dedent(SCRIPT))
    return path


def saved_output(script, folder, config, name):
    model = load_model(script)
    result = quantize(model, config, calibration=[torch.randn(2, 16) for _ in range(5)])
    path = folder / name
    save_quantized(result, path)
    return path


HINT = (
    "Open it as a quantized model instead: load_quantized('{name}', model=...) in Python, "
    "`mono-quant inspect {name}` on the command line, or File → Open Quantized in the app"
)


@pytest.mark.parametrize(
    "config, label",
    [
        (QuantConfig(dtype="int8", mode="weight-only"), "int8, weight-only"),
        (QuantConfig(dtype="int8", mode="dynamic"), "int8, dynamic"),
        (QuantConfig(dtype="int4", mode="weight-only", granularity="per-group", group_size=16), "int4, weight-only"),
        (QuantConfig(dtype="int8", mode="static"), "int8, static"),
        (QuantConfig(dtype="fp16"), "fp16 cast"),
    ],
)
@pytest.mark.parametrize("ext, file_format", [(".safetensors", "safetensors"), (".pt", "pt")])
def test_outputs_of_every_format_are_refused_as_float_checkpoints(script, tmp_path, config, label, ext, file_format):
    name = f"x.{config.dtype}{ext}"
    path = saved_output(script, tmp_path, config, name)
    expected = (
        f"{name}: a mono-quant output ({label}), not a float checkpoint (its tensors are quantized codes "
        f"and scales). {HINT.format(name=name)}"
    )
    with pytest.raises(QuantizedCheckpointError) as caught:
        load_model(script, path)
    assert str(caught.value) == expected
    assert (caught.value.path, caught.value.file_format) == (str(path.resolve()), file_format)
    assert isinstance(caught.value, CheckpointError)  # callers that catch CheckpointError still do
    # strict=False does not turn codes into weights either, nor does loading into an existing model.
    with pytest.raises(QuantizedCheckpointError, match=f"^{name}: a mono-quant output"):
        open_model(script, path, strict=False)
    with pytest.raises(QuantizedCheckpointError, match=f"^{name}: a mono-quant output"):
        load_checkpoint(load_model(script), path, strict=False)
    # The way the message names opens it.
    assert load_quantized(path, model=load_model(script))(torch.randn(3, 16)).shape == (3, 4)


def test_recognising_an_output_never_unpickles_code(script, tmp_path, monkeypatch):
    path = saved_output(script, tmp_path, QuantConfig(mode="weight-only"), "x.int8.pt")
    calls = []
    real_load = torch.load

    def recording_load(*args, **kwargs):
        calls.append(kwargs.get("weights_only"))
        return real_load(*args, **kwargs)

    monkeypatch.setattr(torch, "load", recording_load)
    with pytest.raises(QuantizedCheckpointError):
        load_model(script, path)
    assert calls and all(flag is True for flag in calls)


class _Payload:
    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_a_marker_beside_pickled_code_is_refused_without_running_it(script, tmp_path):
    side_effect = tmp_path / "ran"
    torch.save({"state_dict": {}, "mono_quant": "{}", "x": _Payload(side_effect)}, tmp_path / "evil.pt")
    with pytest.raises(CheckpointError, match=r"^evil\.pt: refused: loading it would need the pickled object"):
        load_model(script, tmp_path / "evil.pt")
    assert not os.path.exists(side_effect)


def test_unreadable_output_metadata_still_refuses(script, tmp_path):
    torch.save({"state_dict": {"features.0.weight": torch.ones(32, 16)}, "mono_quant": "{not json"}, tmp_path / "o.pt")
    with pytest.raises(QuantizedCheckpointError) as caught:
        load_model(script, tmp_path / "o.pt")
    assert str(caught.value).startswith(
        "o.pt: a mono-quant output (its metadata is unreadable), not a float checkpoint"
    )


def test_plain_safetensors_metadata_is_not_an_output(script, tmp_path):
    from safetensors.torch import save_file

    state = {k: torch.full_like(v, 0.5) for k, v in load_model(script).state_dict().items()}
    save_file(state, tmp_path / "w.safetensors", metadata={"format": "pt"})
    loaded = open_model(script, tmp_path / "w.safetensors")
    assert loaded.keys.ok and all(torch.equal(loaded.model.state_dict()[k], v) for k, v in state.items())
