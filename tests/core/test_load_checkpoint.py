"""Checkpoints: formats, wrappers, prefixes, shards, key reports, strictness, source record."""

from __future__ import annotations

import hashlib
import json
import textwrap

import pytest
import torch
from safetensors.torch import save_file

from mono_quant_core.errors import CheckpointError
from mono_quant_core.loading import checkpoint_source, load_checkpoint, load_model, open_model

SCRIPT = """
import torch
from torch import nn

class Net(nn.Module):
    def __init__(self, hidden=8):
        super().__init__()
        self.fc1 = nn.Linear(4, hidden)
        self.bn = nn.BatchNorm1d(hidden)
        self.fc2 = nn.Linear(hidden, 3)
    def forward(self, x):
        return self.fc2(self.bn(self.fc1(x)))

class Tied(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(10, 4)
        self.head = nn.Linear(4, 10, bias=False)
        self.head.weight = self.embed.weight
    def forward(self, x):
        return self.head(self.embed(x))

class Outer(nn.Module):
    def __init__(self):
        super().__init__()
        self.backbone = Net()
"""


@pytest.fixture
def script(tmp_path):
    path = tmp_path / "net.py"
    path.write_text(textwrap.dedent(SCRIPT))
    return path


def trained_state(hidden=8, seed=0):
    """A state dict for Net whose every tensor differs from a fresh model's."""
    gen = torch.Generator().manual_seed(seed)
    shapes = {
        "fc1.weight": (hidden, 4),
        "fc1.bias": (hidden,),
        "bn.weight": (hidden,),
        "bn.bias": (hidden,),
        "bn.running_mean": (hidden,),
        "bn.running_var": (hidden,),
        "fc2.weight": (3, hidden),
        "fc2.bias": (3,),
    }
    state = {k: torch.rand(s, generator=gen) + 0.5 for k, s in shapes.items()}
    state["bn.num_batches_tracked"] = torch.tensor(17)
    return state


def assert_state(model, expected, prefix=""):
    got = model.state_dict()
    assert set(got) == {k.removeprefix(prefix) for k in expected}
    for key, value in expected.items():
        assert torch.equal(got[key.removeprefix(prefix)], value), key


@pytest.mark.parametrize("suffix", [".pt", ".pth", ".bin", ".ckpt"])
def test_plain_state_dict_in_each_torch_suffix(script, tmp_path, suffix):
    state = trained_state()
    ckpt = tmp_path / f"weights{suffix}"
    torch.save(state, ckpt)
    loaded = open_model(script, ckpt, entry="Net")
    assert_state(loaded.model, state)
    assert loaded.keys.ok and loaded.keys.loaded == 9
    assert loaded.keys.wrapper is None and loaded.keys.prefix_stripped is None


@pytest.mark.parametrize(
    "wrap, label",
    [
        (lambda s: {"state_dict": s, "epoch": 3}, "state_dict"),
        (lambda s: {"model_state_dict": s, "optimizer_state_dict": {"state": {}}, "step": 9}, "model_state_dict"),
        (lambda s: {"model": s, "args": {"lr": 0.1}}, "model"),
        (lambda s: {"module": s}, "module"),
        (lambda s: {"model": {"state_dict": s}, "epoch": 1}, "model/state_dict"),
    ],
)
def test_wrappers_are_unwrapped(script, tmp_path, wrap, label):
    state = trained_state()
    torch.save(wrap(state), tmp_path / "w.pt")
    loaded = open_model(script, tmp_path / "w.pt", entry="Net")
    assert_state(loaded.model, state)
    assert loaded.keys.wrapper == label and loaded.keys.ok


def test_lightning_checkpoint(script, tmp_path):
    state = trained_state()
    ckpt = {
        "state_dict": {f"model.{k}": v for k, v in state.items()},
        "epoch": 4,
        "global_step": 100,
        "optimizer_states": [{"state": {}}],
        "lr_schedulers": [],
    }
    torch.save(ckpt, tmp_path / "epoch=4.ckpt")
    loaded = open_model(script, tmp_path / "epoch=4.ckpt", entry="Net")
    assert_state(loaded.model, state)
    assert (loaded.keys.wrapper, loaded.keys.prefix_stripped) == ("state_dict", "model.")
    assert "stripped the prefix 'model.'" in loaded.keys.summary()


def test_ddp_prefix_and_nested_prefixes(script, tmp_path):
    state = trained_state()
    torch.save({f"module.{k}": v for k, v in state.items()}, tmp_path / "ddp.pt")
    loaded = open_model(script, tmp_path / "ddp.pt", entry="Net")
    assert_state(loaded.model, state)
    assert loaded.keys.prefix_stripped == "module."
    torch.save({f"module.model.{k}": v for k, v in state.items()}, tmp_path / "both.pt")
    assert open_model(script, tmp_path / "both.pt", entry="Net").keys.prefix_stripped == "module.model."


def test_prefix_added_when_model_wraps_the_checkpoint(script, tmp_path):
    state = trained_state()
    torch.save(state, tmp_path / "inner.pt")
    loaded = open_model(script, tmp_path / "inner.pt", entry="Outer")
    assert_state(loaded.model.backbone, state)
    assert loaded.keys.prefix_added == "backbone." and loaded.keys.ok


def test_prefix_kept_when_it_is_part_of_the_model_names(script, tmp_path):
    state = {f"backbone.{k}": v for k, v in trained_state().items()}
    torch.save(state, tmp_path / "outer.pt")
    loaded = open_model(script, tmp_path / "outer.pt", entry="Outer")
    assert loaded.keys.prefix_stripped is None and loaded.keys.prefix_added is None
    assert_state(loaded.model, state)


def test_safetensors_file(script, tmp_path):
    state = trained_state()
    save_file(state, tmp_path / "w.safetensors")
    loaded = open_model(script, tmp_path / "w.safetensors", entry="Net")
    assert_state(loaded.model, state)
    assert loaded.keys.ok


def test_sharded_safetensors(script, tmp_path):
    state = trained_state()
    names = sorted(state)
    shards = {"model-00001-of-00002.safetensors": names[:4], "model-00002-of-00002.safetensors": names[4:]}
    weight_map = {}
    for file, keys in shards.items():
        save_file({k: state[k] for k in keys}, tmp_path / file)
        weight_map.update(dict.fromkeys(keys, file))
    index = tmp_path / "model.safetensors.index.json"
    index.write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    loaded = open_model(script, index, entry="Net")
    assert_state(loaded.model, state)
    digest = hashlib.sha256(index.read_bytes())
    for file in sorted(shards):
        digest.update((tmp_path / file).read_bytes())
    assert loaded.source["checkpoint_sha256"] == digest.hexdigest()
    (tmp_path / "model-00002-of-00002.safetensors").unlink()
    with pytest.raises(CheckpointError, match=r"shard model-00002-of-00002\.safetensors .* not found"):
        load_model(script, index, entry="Net")


def test_strict_reports_missing_unexpected_and_mismatched(script, tmp_path):
    state = trained_state()
    del state["fc2.bias"]
    state["extra.weight"] = torch.ones(2)
    state["fc1.weight"] = torch.ones(5, 4)
    torch.save(state, tmp_path / "bad.pt")
    with pytest.raises(CheckpointError) as err:
        load_model(script, tmp_path / "bad.pt", entry="Net")
    text = str(err.value)
    assert text.startswith("bad.pt: does not match the model from net.py:")
    assert "1 missing key: fc2.bias" in text
    assert "1 unexpected key: extra.weight" in text
    assert "1 shape mismatch: fc1.weight (model [8, 4], checkpoint [5, 4])" in text
    assert "strict=False" in text
    assert err.value.keys.missing == ["fc2.bias"]  # the report rides along for the application


def test_non_strict_loads_what_matches(script, tmp_path):
    state = trained_state()
    del state["fc2.bias"]
    state["extra.weight"] = torch.ones(2)
    state["fc1.weight"] = torch.ones(5, 4)
    torch.save(state, tmp_path / "bad.pt")
    fresh = load_model(script, entry="Net")
    loaded = open_model(script, tmp_path / "bad.pt", entry="Net", strict=False)
    keys = loaded.keys
    assert (keys.missing, keys.unexpected, keys.mismatched) == (
        ["fc2.bias"],
        ["extra.weight"],
        [("fc1.weight", (8, 4), (5, 4))],
    )
    assert keys.loaded == 7 and not keys.ok
    model = loaded.model
    assert torch.equal(model.fc2.weight, state["fc2.weight"])
    assert torch.equal(model.bn.running_var, state["bn.running_var"])
    # Not loaded: the script's own initial values (the same seedless init is not
    # reproducible, so compare shapes and that the checkpoint's ones were not used).
    assert model.fc1.weight.shape == (8, 4) and not torch.equal(model.fc1.weight, torch.ones(8, 4))
    assert model.fc2.bias.shape == fresh.fc2.bias.shape
    assert keys.to_dict()["mismatched"] == [["fc1.weight", [8, 4], [5, 4]]]


def test_many_missing_keys_are_counted(script, tmp_path):
    torch.save(
        {f"layer{i}.weight": torch.ones(1) for i in range(12)} | {"fc2.bias": torch.ones(3)}, tmp_path / "many.pt"
    )
    with pytest.raises(CheckpointError, match=r"12 unexpected keys: layer0.weight, .*, … and 2 more"):
        load_model(script, tmp_path / "many.pt", entry="Net")


def test_nothing_matching_fails_even_when_not_strict(script, tmp_path):
    torch.save({"encoder.w": torch.ones(2)}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match=r"other.pt: none of its 1 tensors fits the model"):
        load_model(script, tmp_path / "other.pt", entry="Net", strict=False)


def test_tied_weights_saved_once(script, tmp_path):
    weight = torch.randn(10, 4)
    save_file({"embed.weight": weight}, tmp_path / "tied.safetensors")
    loaded = open_model(script, tmp_path / "tied.safetensors", entry="Tied")
    assert loaded.keys.ok and loaded.keys.tied == ["head.weight"]
    assert torch.equal(loaded.model.head.weight, weight)
    assert loaded.model.head.weight is loaded.model.embed.weight  # still tied


def test_half_precision_checkpoint_keeps_model_dtype(script, tmp_path):
    state = {k: v.half() if v.is_floating_point() else v for k, v in trained_state().items()}
    torch.save(state, tmp_path / "half.pt")
    loaded = open_model(script, tmp_path / "half.pt", entry="Net")
    assert loaded.model.fc1.weight.dtype == torch.float32
    assert torch.equal(loaded.model.fc1.weight, state["fc1.weight"].float())
    assert len(loaded.keys.dtype_changes) == 8
    assert ("fc1.weight", "float16", "float32") in loaded.keys.dtype_changes


def test_legacy_non_zip_checkpoint(script, tmp_path):
    state = trained_state()
    torch.save(state, tmp_path / "old.pt", _use_new_zipfile_serialization=False)
    assert_state(load_model(script, tmp_path / "old.pt", entry="Net"), state)


def test_chunked_reads_give_the_same_weights(script, tmp_path, monkeypatch):
    # One tensor per chunk: after each chunk the mapped pages are released,
    # and the copies must still hold the checkpoint's values.
    monkeypatch.setattr(checkpoint_source, "CHUNK_BYTES", 1)
    state = trained_state()
    torch.save(state, tmp_path / "w.pt")
    torch.save(state, tmp_path / "legacy.pt", _use_new_zipfile_serialization=False)  # not mapped
    save_file(state, tmp_path / "w.safetensors")
    for name in ("w.pt", "legacy.pt", "w.safetensors"):
        assert_state(load_model(script, tmp_path / name, entry="Net"), state)


def test_source_record_and_files_left_alone(script, tmp_path):
    state = trained_state()
    ckpt = tmp_path / "w.pt"
    torch.save(state, ckpt)
    before = (ckpt.read_bytes(), ckpt.stat().st_mtime_ns)
    model = load_model(script, ckpt, entry="Net", entry_kwargs={"hidden": 8})
    assert model._mono_quant_source == {
        "script": "net.py",
        "script_path": str(script.resolve()),
        "entry": "Net",
        "entry_kwargs": {"hidden": 8},
        "checkpoint": "w.pt",
        "checkpoint_path": str(ckpt.resolve()),
        "checkpoint_sha256": hashlib.sha256(before[0]).hexdigest(),
    }
    assert (ckpt.read_bytes(), ckpt.stat().st_mtime_ns) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["net.py", "w.pt"]


@pytest.mark.parametrize("checkpoint", [None, ""])
def test_no_checkpoint(script, checkpoint):
    loaded = open_model(script, checkpoint, entry="Net")
    assert loaded.keys.checkpoint is None and loaded.keys.loaded == 0
    assert loaded.source["checkpoint"] is None and loaded.source["checkpoint_sha256"] is None
    assert "no checkpoint" in loaded.keys.summary()


def test_load_checkpoint_into_existing_model(script, tmp_path):
    state = trained_state()
    torch.save(state, tmp_path / "w.pt")
    model = load_model(script, entry="Net")
    assert load_checkpoint(model, tmp_path / "w.pt").loaded == 9
    assert_state(model, state)


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("w.onnx", b"x", r"w.onnx: unsupported checkpoint type; supported: .pt, .pth"),
        (
            "w.pt",
            b"not a checkpoint at all",
            r"w.pt: not a readable PyTorch checkpoint: not a file written by torch.save \(it is neither a zip archive",
        ),
        (
            "w.safetensors",
            b"\x10\x00\x00\x00\x00\x00\x00\x00{broken",
            r"w.safetensors: not a readable checkpoint: not a valid safetensors file \(",
        ),
        ("w.safetensors.index.json", b"{}", r"w.safetensors.index.json: not a safetensors index with a weight_map"),
    ],
)
def test_unreadable_checkpoints(script, tmp_path, name, content, message):
    (tmp_path / name).write_bytes(content)
    with pytest.raises(CheckpointError, match=message):
        load_model(script, tmp_path / name, entry="Net")


def test_checkpoint_that_is_not_a_state_dict(script, tmp_path):
    torch.save(torch.ones(3), tmp_path / "t.pt")
    with pytest.raises(CheckpointError, match=r"t\.pt: holds a single tensor, not a state dict"):
        load_model(script, tmp_path / "t.pt", entry="Net")
    torch.save([torch.ones(3)], tmp_path / "l.pt")
    with pytest.raises(CheckpointError, match=r"l.pt: holds a list, not a state dict.*state_dict\(\)"):
        load_model(script, tmp_path / "l.pt", entry="Net")
    with pytest.raises(CheckpointError, match=r"nope\.pt: checkpoint not found"):
        load_model(script, tmp_path / "nope.pt", entry="Net")


def test_page_release_only_touches_the_files_own_mapping(tmp_path):
    from mono_quant_core.loading.page_release import file_mappings, release_pages

    torch.save({"w": torch.arange(5000.0)}, tmp_path / "w.pt")
    mapped = torch.load(tmp_path / "w.pt", mmap=True, weights_only=True)["w"]
    mappings = file_mappings(tmp_path / "w.pt")
    assert mappings and file_mappings(tmp_path / "other.pt") == []
    release_pages(mapped, mappings)
    assert torch.equal(mapped, torch.arange(5000.0))  # dropped pages come back from the file
    ordinary = torch.arange(5000.0)
    release_pages(ordinary, mappings)  # outside the mapping: left alone (else it would be zeroed)
    assert torch.equal(ordinary, torch.arange(5000.0))
