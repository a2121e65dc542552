"""Training checkpoints: the state dict is found by matching the model, at any depth and under any name."""

from __future__ import annotations

import textwrap
import zipfile

import pytest
import torch

from mono_quant_core.errors import CheckpointError
from mono_quant_core.loading import load_model, open_model

SCRIPT = """
import torch
from torch import nn

class SpeakerEncoder(nn.Module):
    # The layout of a published speaker encoder: an LSTM, a projection, two scalars.
    def __init__(self):
        super().__init__()
        self.lstm = nn.LSTM(input_size=8, hidden_size=16, num_layers=3, batch_first=True)
        self.linear = nn.Linear(16, 12)
        self.relu = nn.ReLU()
        self.similarity_weight = nn.Parameter(torch.tensor([10.0]))
        self.similarity_bias = nn.Parameter(torch.tensor([-5.0]))

    def forward(self, x):
        _, (hidden, _) = self.lstm(x)
        return self.relu(self.linear(hidden[-1]))
"""


@pytest.fixture
def script(tmp_path):
    path = tmp_path / "encoder.py"
    path.write_text(textwrap.dedent(SCRIPT))
    return path


def trained(script, seed=1):
    """A model's state dict and its Adam state after one step, every tensor unlike a fresh model's."""
    model = load_model(script)
    torch.manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.rand_like(p) + 0.5)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    model.train()
    model(torch.randn(2, 5, 8)).sum().backward()
    optimizer.step()
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    return state, optimizer.state_dict()


@pytest.fixture
def saved_on_cuda():
    """``torch.save`` records every storage's location as ``cuda:0``, as on a GPU machine."""
    registry = torch.serialization._package_registry
    before = list(registry)
    torch.serialization.register_package(-100, lambda storage: "cuda:0", lambda storage, location: None)
    yield
    registry[:] = before


def assert_loaded(loaded, state):
    got = loaded.model.state_dict()
    assert loaded.keys.ok and loaded.keys.missing == [] and loaded.keys.unexpected == []
    assert loaded.keys.loaded == len(state) == len(got)
    for key, value in state.items():
        assert torch.equal(got[key], value), key


def test_speaker_encoder_checkpoint_saved_on_cuda(script, tmp_path, saved_on_cuda):
    state, optimizer_state = trained(script)
    ckpt = tmp_path / "encoder.pt"
    torch.save({"step": 3, "model_state": state, "optimizer_state": optimizer_state}, ckpt)
    with zipfile.ZipFile(ckpt) as archive:
        pickled = archive.read(next(n for n in archive.namelist() if n.endswith("data.pkl")))
    assert b"cuda:0" in pickled and b"cpu" not in pickled

    loaded = open_model(script, ckpt)
    assert_loaded(loaded, state)
    assert loaded.keys.wrapper == "model_state"
    assert loaded.keys.ignored_entries == ["optimizer_state", "step"]
    assert loaded.keys.prefix_stripped is None and loaded.keys.prefix_added is None
    summary = loaded.keys.summary().splitlines()
    assert summary == [
        f"encoder.pt: loaded {len(state)} tensors",
        "using checkpoint entry 'model_state'",
        "ignored: optimizer_state, step",
    ]
    assert loaded.keys.to_dict()["wrapper"] == "model_state"
    assert all(t.device.type == "cpu" for t in loaded.model.state_dict().values())


def test_doubly_nested_ema_entry(script, tmp_path):
    state, optimizer_state = trained(script)
    ckpt = tmp_path / "last.ckpt"
    torch.save({"checkpoint": {"ema": state, "optimizer": optimizer_state, "updates": 120}, "epoch": 5}, ckpt)
    loaded = open_model(script, ckpt)
    assert_loaded(loaded, state)
    assert loaded.keys.wrapper == "checkpoint/ema"
    assert loaded.keys.ignored_entries == ["checkpoint/optimizer", "checkpoint/updates", "epoch"]
    assert "using checkpoint entry 'checkpoint/ema'" in loaded.keys.summary()
    assert "ignored: checkpoint/optimizer, checkpoint/updates, epoch" in loaded.keys.summary()


def test_module_prefixed_entry_under_another_name(script, tmp_path):
    state, optimizer_state = trained(script)
    ckpt = tmp_path / "ddp.pth"
    torch.save({"net": {f"module.{k}": v for k, v in state.items()}, "opt": optimizer_state, "iteration": 7}, ckpt)
    loaded = open_model(script, ckpt)
    assert_loaded(loaded, state)
    assert (loaded.keys.wrapper, loaded.keys.prefix_stripped) == ("net", "module.")
    assert loaded.keys.ignored_entries == ["iteration", "opt"]
    lines = loaded.keys.summary().splitlines()
    assert lines[1:] == [
        "using checkpoint entry 'net'",
        "stripped the prefix 'module.' from checkpoint names",
        "ignored: iteration, opt",
    ]


@pytest.mark.parametrize("name", ["params", "weights", "network"])
def test_any_wrapper_name(script, tmp_path, name):
    state, _ = trained(script)
    torch.save({name: state, "config": {"lr": 0.1, "hidden": 16}}, tmp_path / "w.pt")
    loaded = open_model(script, tmp_path / "w.pt")
    assert_loaded(loaded, state)
    assert loaded.keys.wrapper == name and loaded.keys.ignored_entries == ["config"]


def test_the_entry_that_fits_most_keys_wins_over_fixed_names(script, tmp_path):
    state, _ = trained(script)
    partial = {k: v + 1 for k, v in state.items() if k.startswith("linear.")}
    torch.save({"model": partial, "weights": state}, tmp_path / "w.pt")
    loaded = open_model(script, tmp_path / "w.pt")
    assert_loaded(loaded, state)
    assert loaded.keys.wrapper == "weights" and loaded.keys.ignored_entries == ["model"]


def test_equal_fits_are_broken_by_the_fixed_names_then_file_order(script, tmp_path):
    state, _ = trained(script, seed=1)
    other, _ = trained(script, seed=2)
    torch.save({"ema": other, "model": state}, tmp_path / "a.pt")
    loaded = open_model(script, tmp_path / "a.pt")
    assert_loaded(loaded, state)
    assert loaded.keys.wrapper == "model" and loaded.keys.ignored_entries == ["ema"]
    torch.save({"net": state, "network": other}, tmp_path / "b.pt")
    loaded = open_model(script, tmp_path / "b.pt")
    assert_loaded(loaded, state)
    assert loaded.keys.wrapper == "net" and loaded.keys.ignored_entries == ["network"]


def test_a_state_dict_inside_a_list(script, tmp_path):
    state, optimizer_state = trained(script)
    torch.save({"models": [state], "optimizers": [optimizer_state]}, tmp_path / "w.pt")
    loaded = open_model(script, tmp_path / "w.pt")
    assert_loaded(loaded, state)
    assert loaded.keys.wrapper == "models/0" and loaded.keys.ignored_entries == ["optimizers"]


def test_no_entry_fits_names_the_file(script, tmp_path):
    _, optimizer_state = trained(script)
    torch.save({"step": 3, "optimizer_state": optimizer_state}, tmp_path / "opt.pt")
    with pytest.raises(CheckpointError, match=r"^opt\.pt: none of its \d+ tensors fits the model from encoder\.py"):
        load_model(script, tmp_path / "opt.pt")
