"""Sharded ``.safetensors`` outputs: written shard by shard and atomically, read back bit-exactly."""

from __future__ import annotations

import errno
import json
import os
import textwrap

import pytest
import torch
from safetensors.torch import load_file, save_file

from mono_quant_core import QuantConfig, load_quantized, open_quantized, quantize, read_metadata, save_quantized
from mono_quant_core.errors import ConfigError, ContentHashError, QuantizedCheckpointError, QuantizedFileError
from mono_quant_core.inspect_file import format_inspect, inspect_file
from mono_quant_core.loading import load_model
from mono_quant_core.serialization import safetensors_file, sharded
from mono_quant_core.serialization.sharded import parse_size

SCRIPT = """
import torch
from torch import nn

class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(40, 32)
        self.blocks = nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 32))
        self.head = nn.Linear(32, 40)
        self.head.weight = self.embed.weight  # tied: stored once, restored by the alias

    def forward(self, tokens):
        return self.head(self.blocks(self.embed(tokens)))


def build():
    torch.manual_seed(0)
    return Net()
"""

CONFIGS = {
    "int8": QuantConfig(dtype="int8", mode="weight-only"),
    "int4": QuantConfig(dtype="int4", mode="weight-only", granularity="per-group", group_size=16),
}
#: Small enough to split every model here in at least three shards.
SHARD_BYTES = 3000
TOKENS = torch.randint(0, 40, (4, 7), generator=torch.Generator().manual_seed(1))


@pytest.fixture(scope="module")
def script(tmp_path_factory):
    path = tmp_path_factory.mktemp("script") / "net.py"
    path.write_text(textwrap.dedent(SCRIPT))
    return path


def result_of(script, dtype):
    return quantize(load_model(script, entry="build"), CONFIGS[dtype])


def other_result(script):
    """An int8 result of the same shapes (the same shard names) but other weights."""
    model = load_model(script, entry="build")
    with torch.no_grad():
        model.blocks[0].weight.add_(0.1 * torch.randn_like(model.blocks[0].weight))
    return quantize(model, CONFIGS["int8"])


def folder_files(folder):
    return {n: (folder / n).read_bytes() for n in sorted(os.listdir(folder))}


@pytest.mark.parametrize("dtype", ["int8", "int4"])
def test_sharded_round_trip_is_bit_exact_and_equals_one_file(script, tmp_path, dtype):
    result = result_of(script, dtype)
    (tmp_path / "one").mkdir()
    (tmp_path / "split").mkdir()
    one, split = tmp_path / "one" / "model.safetensors", tmp_path / "split" / "model.safetensors"
    save_quantized(result, one)
    size = save_quantized(result, split, max_shard_bytes=SHARD_BYTES)
    files = sorted(os.listdir(split.parent))
    shards = [f for f in files if f.endswith(".safetensors")]
    count = len(shards)
    assert count >= 3
    assert files == sorted(
        [*(f"model-{i:05d}-of-{count:05d}.safetensors" for i in range(1, count + 1)), "model.safetensors.index.json"]
    )
    assert size == result.report.file_bytes == sum(os.path.getsize(split.parent / f) for f in files)
    # Every shard stays within the limit unless a single tensor is larger.
    for name in shards:
        header = safetensors_file.read_header(str(split.parent / name))
        sizes = [v["data_offsets"][1] - v["data_offsets"][0] for k, v in header.items() if k != "__metadata__"]
        assert sum(sizes) <= SHARD_BYTES or len(sizes) == 1
    # The shards hold exactly the one file's tensors, byte for byte.
    whole = load_file(one)
    parts: dict[str, torch.Tensor] = {}
    for name in shards:
        parts.update(load_file(split.parent / name))
    assert sorted(parts) == sorted(whole)
    for name, t in whole.items():
        assert parts[name].dtype == t.dtype and torch.equal(parts[name], t), name
    index = json.loads((split.parent / "model.safetensors.index.json").read_text())
    assert index["metadata"]["total_size"] == sum(t.numel() * t.element_size() for t in whole.values())
    assert set(index["weight_map"]) == set(whole)
    assert read_metadata(split.parent / "model.safetensors.index.json") == read_metadata(one)
    # Loading: bit-exact state dict and outputs; every way of naming the output opens it.
    reference = load_quantized(one, script=script)
    expected = reference(TOKENS)
    for given in (split.parent / "model.safetensors.index.json", split, split.parent, split.parent / shards[1]):
        model = load_quantized(given, script=script, verify=True)
        state, ref_state = model.state_dict(), reference.state_dict()
        assert state.keys() == ref_state.keys()
        assert all(torch.equal(state[k], ref_state[k]) for k in ref_state), given
        assert torch.equal(model(TOKENS), expected), given
    assert model.head.weight is model.embed.weight or not isinstance(reference.head.weight, torch.nn.Parameter)


def test_output_that_fits_in_one_shard_is_one_file(script, tmp_path):
    result = result_of(script, "int8")
    path = tmp_path / "model.safetensors"
    save_quantized(result, path, max_shard_bytes="1GB")
    assert os.listdir(tmp_path) == ["model.safetensors"]
    other = tmp_path / "plain.safetensors"
    save_quantized(result, other)
    assert path.read_bytes() == other.read_bytes()


def test_shard_sizes_parse_with_units():
    assert parse_size(None) is None
    assert parse_size(1234) == 1234
    assert parse_size("5GB") == 5 * 10**9
    assert parse_size("512MiB") == 512 << 20
    assert parse_size("1.5 kb") == 1500
    for bad in ("5 apples", "", "GB", 0, "-1MB", True):
        with pytest.raises(ConfigError, match="max_shard_bytes"):
            parse_size(bad)


def test_pt_outputs_are_not_sharded(script, tmp_path):
    with pytest.raises(ConfigError, match=r"only \.safetensors outputs are written in shards"):
        save_quantized(result_of(script, "int8"), tmp_path / "model.pt", max_shard_bytes=SHARD_BYTES)
    assert os.listdir(tmp_path) == []


@pytest.fixture
def saved(script, tmp_path):
    path = tmp_path / "model.safetensors"
    save_quantized(result_of(script, "int8"), path, max_shard_bytes=SHARD_BYTES)
    index = tmp_path / "model.safetensors.index.json"
    shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
    return index, [tmp_path / s for s in shards]


def _flip_last_byte(file):
    data = bytearray(file.read_bytes())
    data[-1] ^= 0xFF
    file.write_bytes(bytes(data))


def test_a_damaged_shard_is_named(script, saved):
    index, shards = saved
    _flip_last_byte(shards[1])
    with pytest.raises(ContentHashError) as caught:
        load_quantized(index, script=script)
    assert str(caught.value).startswith(f"{shards[1]}: corrupt: the bytes of tensor ")
    assert caught.value.path == str(shards[1])
    with pytest.raises(ContentHashError, match=shards[1].name):
        inspect_file(index, verify=True)
    load_quantized(index, script=script, verify=False)  # unverified, the damaged bytes load


def test_a_truncated_or_missing_shard_is_named(script, saved):
    index, shards = saved
    shards[0].write_bytes(shards[0].read_bytes()[:-5])
    with pytest.raises(QuantizedFileError, match=f"^{shards[0]}: truncated or corrupt"):
        load_quantized(index, script=script, verify=False)
    shards[0].unlink()
    with pytest.raises(QuantizedFileError, match=f"^{index}: shard {shards[0].name} is missing from the folder"):
        read_metadata(index)


def test_a_shard_of_another_save_is_refused(script, saved, tmp_path):
    index, shards = saved
    other = tmp_path / "other"
    other.mkdir()
    save_quantized(other_result(script), other / "model.safetensors", max_shard_bytes=SHARD_BYTES)
    os.replace(other / shards[0].name, shards[0])
    with pytest.raises(QuantizedFileError, match=f"^{shards[0]}: a shard of another save"):
        load_quantized(index, script=script, verify=False)


def test_a_shard_without_its_index_says_so(saved):
    index, shards = saved
    index.unlink()
    with pytest.raises(QuantizedFileError, match=f"^{shards[0]}: shard 1 of {len(shards)} of a sharded mono-quant"):
        read_metadata(shards[0])


def test_inspect_and_open_a_sharded_output(script, saved, capsys):
    from mono_quant_core.cli.main import main

    index, shards = saved
    total = sum(os.path.getsize(f) for f in [index, *shards])
    info = inspect_file(index, verify=True)
    assert info["file"] == index.name and info["format"] == "safetensors"
    assert info["shards"] == [s.name for s in shards]
    assert info["sizes"]["file_bytes"] == total
    records = read_metadata(index)["content_hash"]["tensors"]
    assert info["sizes"]["tensors"] == len(records) == info["content_hash"]["tensors"]
    assert info["content_hash"]["verified"] is True
    assert f"({len(shards)} shards" not in format_inspect(info)  # the line reads "safetensors, N shards"
    assert f"{index.name}  (safetensors, {len(shards)} shards, mono-quant file format 1)" in format_inspect(info)
    assert main(["inspect", str(index.parent), "--verify"]) == 0
    assert f"ok ({len(records)} tensors)" in capsys.readouterr().out
    opened = open_quantized(index.parent / "model.safetensors", script=script)
    assert opened.report.file_bytes == total
    assert opened.source["quantized_path"] == str(index)


def test_shards_and_index_are_refused_as_float_checkpoints(script, saved):
    index, shards = saved
    for given in (index, shards[1]):
        with pytest.raises(
            QuantizedCheckpointError, match=r": a mono-quant output \(int8, weight-only\), not a float"
        ) as caught:
            load_model(script, given, entry="build")
        assert str(caught.value).startswith(f"{given.name}: ")  # the file the user gave, the index too


def test_a_failed_save_leaves_the_earlier_output_unchanged(script, saved, monkeypatch):
    index, shards = saved
    before = folder_files(index.parent)
    result = other_result(script)
    real_write, calls = safetensors_file.write, []

    def full_disk_on_second_shard(f, header, ordered):
        calls.append(1)
        if len(calls) == 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        real_write(f, header, ordered)

    monkeypatch.setattr(safetensors_file, "write", full_disk_on_second_shard)
    with pytest.raises(QuantizedFileError, match="disk full"):
        save_quantized(result, index.parent / "model.safetensors", max_shard_bytes=SHARD_BYTES)
    assert folder_files(index.parent) == before  # no temporary file, no new shard, old ones intact
    monkeypatch.setattr(safetensors_file, "write", real_write)

    # A rename failing half-way puts back the shards already replaced.
    real_replace, renames = os.replace, []

    def fail_third_rename(src, dst):
        if not os.path.basename(str(src)).startswith(".") or str(dst).endswith(".tmp"):
            return real_replace(src, dst)  # the backups and their restoring
        renames.append(os.path.basename(str(dst)))
        if len(renames) == 3:
            raise OSError(errno.EIO, "Input/output error")
        return real_replace(src, dst)

    monkeypatch.setattr(sharded.os, "replace", fail_third_rename)
    with pytest.raises(QuantizedFileError, match="Input/output error"):
        save_quantized(result, index.parent / "model.safetensors", max_shard_bytes=SHARD_BYTES)
    monkeypatch.setattr(sharded.os, "replace", real_replace)
    names = [s.name for s in shards[:3]]
    assert renames == names + names[::-1]  # three shards replaced (the third failed), then all put back
    assert folder_files(index.parent) == before
    load_quantized(index, script=script)  # the earlier output still loads and verifies


def test_a_new_save_replaces_every_file_of_the_earlier_output(script, saved):
    index, shards = saved
    folder, result = index.parent, result_of(script, "int8")
    save_quantized(result, folder / "model.safetensors", max_shard_bytes=2 * SHARD_BYTES)
    fewer = sorted(os.listdir(folder))
    assert len(fewer) - 1 < len(shards) and "model.safetensors.index.json" in fewer
    save_quantized(result, folder / "model.safetensors")  # one file: the index and shards go
    assert os.listdir(folder) == ["model.safetensors"]
    save_quantized(result, folder / "model.safetensors", max_shard_bytes=SHARD_BYTES)  # and back
    assert sorted(os.listdir(folder)) == sorted([index.name, *(s.name for s in shards)])
    load_quantized(folder, script=script)


def test_the_command_line_and_job_files_write_shards(script, tmp_path, capsys):
    from mono_quant_core.cli.main import main
    from mono_quant_core.jobs import load_job

    out, job_file = tmp_path / "q.safetensors", tmp_path / "job.toml"
    args = ["quantize", "--script", str(script), "--entry", "build", "--dtype", "int8", "--out", str(out)]
    assert main([*args, "--max-shard-size", "3KB", "--save-job", str(job_file)]) == 0
    assert f"wrote {out}.index.json (" in capsys.readouterr().out  # the file to open
    shards = sorted(f for f in os.listdir(tmp_path) if f.endswith(".safetensors"))
    assert len(shards) >= 3 and not out.exists() and shards[0] == f"q-00001-of-{len(shards):05d}.safetensors"
    assert 'max_shard_size = "3KB"' in job_file.read_text()
    assert load_job(job_file).max_shard_size == "3KB"
    expected = load_quantized(out, script=script)(TOKENS)
    assert main(["run", str(job_file)]) == 0  # the job writes the same set again
    assert torch.equal(load_quantized(tmp_path / "q.safetensors.index.json", script=script)(TOKENS), expected)
    assert main([*args, "--max-shard-size", "3 apples"]) == 2
    assert "--max-shard-size: '3 apples' is not a size" in capsys.readouterr().err
    assert main([*args[:-1], str(tmp_path / "q.pt"), "--max-shard-size", "3KB"]) == 2
    assert "--max-shard-size: only .safetensors outputs are written in shards" in capsys.readouterr().err


def test_the_compressed_tensors_export_is_written_shard_by_shard(script, tmp_path, monkeypatch):
    """Each shard's converted tensors are made just before it is written and freed after; the
    files are byte for byte what safetensors writes for the whole export split the same way."""
    import weakref

    from safetensors.torch import save_file

    from mono_quant_core.serialization import compressed_tensors as ct

    result = result_of(script, "int4")
    real_write, earlier, alive_at_write = ct._write_shard, [], []

    def tracking_write(path, tensors):
        alive_at_write.append(sum(ref() is not None for ref in earlier))
        real_write(path, tensors)
        earlier.extend(weakref.ref(t) for name, t in tensors.items() if name.endswith("weight_packed"))

    monkeypatch.setattr(ct, "_write_shard", tracking_write)
    out = tmp_path / "export"
    save_quantized(result, out, format="compressed-tensors", max_shard_bytes=SHARD_BYTES)
    index = json.loads((out / ct.INDEX).read_text())
    shards = sorted(set(index["weight_map"].values()))
    assert len(shards) >= 3 and len(alive_at_write) == len(shards)
    assert len(earlier) == 4  # the packed weights of the four Linears ...
    assert alive_at_write == [0] * len(shards)  # ... none alive when a later shard is written
    whole = ct.export_tensors(result.model, ct.plan_layers(result.model))
    parts = ct.shard(whole, SHARD_BYTES)
    assert len(parts) == len(shards)
    for name, part in zip(shards, parts, strict=True):
        save_file(part, tmp_path / "reference.safetensors", metadata={"format": "pt"})
        assert (out / name).read_bytes() == (tmp_path / "reference.safetensors").read_bytes(), name


def test_the_shards_of_a_sharded_input_checkpoint_are_not_overwritten(script, tmp_path):
    result = result_of(script, "int8")
    probe = tmp_path / "probe"
    probe.mkdir()
    save_quantized(result, probe / "model.safetensors", max_shard_bytes=SHARD_BYTES)
    names = sorted(n for n in os.listdir(probe) if n.endswith(".safetensors"))
    folder = tmp_path / "hf"
    folder.mkdir()
    weights = load_model(script, entry="build").state_dict()
    for name in names:  # a float checkpoint whose shards have the names the save would write
        save_file({"w": torch.zeros(1)}, folder / name)
    index = folder / "float.safetensors.index.json"
    index.write_text(json.dumps({"metadata": {}, "weight_map": dict.fromkeys(weights, names[1])}))
    result.source = {**(result.source or {}), "checkpoint_path": str(index)}
    before = folder_files(folder)
    with pytest.raises(ConfigError, match=f"^{folder / names[1]}: is the input checkpoint's shard; refusing"):
        save_quantized(result, folder / "model.safetensors", max_shard_bytes=SHARD_BYTES)
    assert folder_files(folder) == before
