"""Files are not trusted: content hashes, named malformed fields, random damage, a killed save's leftovers."""

from __future__ import annotations

import hashlib
import json
import os
import random
import struct
import subprocess
import sys
import time

import pytest
import torch
from torch import nn

from mono_quant_core import (
    ContentHashError,
    MonoQuantError,
    QuantConfig,
    QuantizedFileError,
    load_quantized,
    quantize,
    read_metadata,
    save_quantized,
)
from mono_quant_core.inspect_file import format_inspect, inspect_file
from mono_quant_core.serialization import leftovers

FORMATS = [".safetensors", ".pt"]


def tiny() -> nn.Module:
    with torch.random.fork_rng():  # the same weights every time, the global generator untouched
        torch.manual_seed(0)
        return nn.Sequential(nn.Linear(16, 24), nn.ReLU(), nn.Linear(24, 8)).eval()


@pytest.fixture(scope="module")
def result():
    return quantize(tiny(), QuantConfig(), calibration=[torch.randn(4, 16) for _ in range(2)])


@pytest.fixture(scope="module")
def inputs():
    return torch.randn(5, 16, generator=torch.Generator().manual_seed(1))


def saved(result, folder, ext):
    path = folder / f"tiny{ext}"
    save_quantized(result, path)
    return path


# --- reading and rewriting files by hand, as another tool (or damage) would ---


def st_parts(path):
    data = path.read_bytes()
    n = struct.unpack("<Q", data[:8])[0]
    return json.loads(data[8 : 8 + n]), data[8 + n :]


def st_write(path, header, body):
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    path.write_bytes(struct.pack("<Q", len(text)) + text + body)


def change_header(path, change):
    header, body = st_parts(path)
    change(header)
    st_write(path, header, body)


def change_meta(path, change):
    """Change the parsed ``mono_quant`` metadata in place (its content hash is left as it was)."""
    if path.suffix == ".safetensors":
        header, body = st_parts(path)
        meta = json.loads(header["__metadata__"]["mono_quant"])
        change(meta)
        header["__metadata__"]["mono_quant"] = json.dumps(meta)
        st_write(path, header, body)
    else:
        obj = torch.load(path, weights_only=True)
        meta = json.loads(obj["mono_quant"])
        change(meta)
        obj["mono_quant"] = json.dumps(meta)
        torch.save(obj, path)


def change_tensors(path, change):
    """Change the stored tensors, keeping the metadata string byte for byte."""
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file, save_file

        header, _ = st_parts(path)
        tensors = load_file(path)
        change(tensors)
        save_file(tensors, path, metadata=header["__metadata__"])
    else:
        obj = torch.load(path, weights_only=True)
        change(obj["state_dict"])
        torch.save(obj, path)


# --- the hash itself ---


@pytest.mark.parametrize("ext", FORMATS)
def test_every_tensor_and_the_metadata_are_hashed(result, tmp_path, ext):
    path = saved(result, tmp_path, ext)
    meta = read_metadata(path)
    field = meta["content_hash"]
    assert list(meta)[-1] == "content_hash" and field["algorithm"] == "sha256"
    state = result.model.state_dict()
    assert list(field["tensors"]) == list(state)
    for name, t in state.items():
        record = field["tensors"][name]
        code = {torch.int8: "I8", torch.float32: "F32", torch.int32: "I32"}[t.dtype]
        assert record == {
            "dtype": code,
            "shape": list(t.shape),
            "sha256": hashlib.sha256(t.contiguous().numpy().tobytes()).hexdigest(),
        }
    rest = {k: v for k, v in meta.items() if k != "content_hash"}
    expected = hashlib.sha256(json.dumps(rest, separators=(",", ":"), ensure_ascii=True).encode()).hexdigest()
    assert field["metadata"] == expected


def test_tensors_hashed_on_threads_get_the_serial_digests(monkeypatch):
    """Above ``_PARALLEL_BYTES`` the digests come from a thread pool, in the tensors' order."""
    from mono_quant_core.serialization import content_hash

    g = torch.Generator().manual_seed(3)
    tensors = [torch.randint(-128, 128, (n, 1024), generator=g, dtype=torch.int8) for n in (6000, 7, 3000, 1)]
    assert sum(t.numel() for t in tensors) > content_hash._PARALLEL_BYTES
    used = []
    real_pool = content_hash.ThreadPoolExecutor
    monkeypatch.setattr(content_hash, "ThreadPoolExecutor", lambda **kw: used.append(kw) or real_pool(**kw))
    monkeypatch.setattr(content_hash.os, "cpu_count", lambda: 2)
    digests = content_hash._digests(tensors)
    assert used and used[0]["max_workers"] == 2
    assert digests == [hashlib.sha256(t.numpy().tobytes()).hexdigest() for t in tensors]


def test_a_safetensors_save_is_byte_for_byte_what_safetensors_writes(result, tmp_path):
    """The data section is written first (hashed meanwhile), the header over its place last."""
    from safetensors.torch import save

    path = saved(result, tmp_path, ".safetensors")
    meta = read_metadata(path)
    from mono_quant_core.serialization.file_tensors import file_tensors

    tensors, _ = file_tensors(result.model)
    expected = save(
        {k: v.contiguous() for k, v in tensors.items()},
        metadata={"mono_quant": json.dumps(meta, separators=(",", ":"))},
    )
    assert path.read_bytes() == expected


def test_a_failed_hash_leaves_no_file_and_no_thread(result, tmp_path, monkeypatch):
    from mono_quant_core.serialization import save as save_module

    def broken(meta, tensors, hash_data=True):
        if hash_data:
            raise OSError(28, "No space left on device")
        return real(meta, tensors, hash_data)

    real = save_module.add_content_hash
    monkeypatch.setattr(save_module, "add_content_hash", broken)
    target = tmp_path / "out.safetensors"
    with pytest.raises(QuantizedFileError, match=r"out\.safetensors"):
        save_quantized(result, target)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("ext", FORMATS)
def test_a_changed_tensor_byte_is_found_and_named(result, inputs, tmp_path, ext):
    path = saved(result, tmp_path, ext)
    expected = result.model(inputs)

    def damage(tensors):
        tensors["2.weight"].view(-1)[7] ^= 0x10  # a flipped bit in one int8 code

    change_tensors(path, damage)
    with pytest.raises(ContentHashError) as err:
        load_quantized(path, model=tiny())
    assert str(err.value) == (
        f"{path}: corrupt: the bytes of tensor '2.weight' differ from their SHA-256 recorded when the file was written"
    )
    assert (err.value.path, err.value.tensor) == (str(path), "2.weight")
    with pytest.raises(ContentHashError, match=r"'2\.weight'"):
        inspect_file(path, verify=True)
    # verify=False skips the check: the damaged code is loaded as it is.
    loaded = load_quantized(path, model=tiny(), verify=False)
    assert not torch.equal(loaded(inputs), expected)


@pytest.mark.parametrize("ext", FORMATS)
def test_changed_dtype_shape_or_names_are_found(result, tmp_path, ext):
    path = saved(result, tmp_path, ext)
    original = path.read_bytes()
    cases = [
        (
            lambda t: t.update({"0.bias": t["0.bias"].reshape(2, 12)}),
            "tensor '0.bias' is F32 [2, 12] in the file but was written as F32 [24]",
        ),
        (
            lambda t: t.update({"0.bias": t["0.bias"].view(torch.int32)}),
            "tensor '0.bias' is I32 [24] in the file but was written as F32 [24]",
        ),
        (lambda t: t.update({"extra": torch.zeros(2)}), "tensor 'extra' has no recorded hash"),
        (lambda t: t.pop("2.bias"), "tensor '2.bias' is recorded in the content hash but missing"),
    ]
    for change, message in cases:
        path.write_bytes(original)
        change_tensors(path, change)
        with pytest.raises(ContentHashError) as err:
            inspect_file(path, verify=True)
        assert str(err.value).startswith(f"{path}: corrupt: {message}")


@pytest.mark.parametrize("ext", FORMATS)
def test_changed_metadata_is_found(result, tmp_path, ext):
    path = saved(result, tmp_path, ext)
    change_meta(path, lambda m: m["layers"][0].update(scheme="asymmetric"))
    with pytest.raises(ContentHashError) as err:
        load_quantized(path, model=tiny())
    assert str(err.value).startswith(f"{path}: corrupt: the metadata differs from its SHA-256")
    assert err.value.tensor is None


@pytest.mark.parametrize("ext", FORMATS)
def test_a_file_without_hashes_loads_as_before(result, inputs, tmp_path, ext):
    path = saved(result, tmp_path, ext)
    change_meta(path, lambda m: m.pop("content_hash"))
    assert torch.equal(load_quantized(path, model=tiny())(inputs), result.model(inputs))
    info = inspect_file(path, verify=True)
    assert info["content_hash"] == {"recorded": False, "tensors": None, "verified": None}
    assert "content hash  none recorded" in format_inspect(info)


BAD_HASH_FIELDS = [
    (lambda h: "not an object", "'content_hash' must be an object"),
    (lambda h: {**h, "algorithm": "md5"}, "'content_hash.algorithm' is 'md5'"),
    (lambda h: {**h, "metadata": h["metadata"].upper()}, "'content_hash.metadata' must be 64 lowercase"),
    (lambda h: {**h, "tensors": [1, 2]}, "'content_hash.tensors' must map tensor names"),
    (lambda h: {**h, "tensors": {**h["tensors"], "0.weight": "x"}}, 'content_hash.tensors["0.weight"]\' must be'),
    (
        lambda h: {**h, "tensors": {**h["tensors"], "0.weight": {**h["tensors"]["0.weight"], "sha256": "ab"}}},
        "'content_hash.tensors[\"0.weight\"].sha256' must be 64 lowercase",
    ),
    (
        lambda h: {**h, "tensors": {**h["tensors"], "0.bias": {**h["tensors"]["0.bias"], "shape": "24"}}},
        "'content_hash.tensors[\"0.bias\"].shape' must be a list of integers",
    ),
    (
        lambda h: {**h, "tensors": {**h["tensors"], "0.bias": {"shape": [24], "sha256": "0" * 64}}},
        "'content_hash.tensors[\"0.bias\"].dtype' must be a string",
    ),
]


@pytest.mark.parametrize("ext", FORMATS)
@pytest.mark.parametrize("bad, message", BAD_HASH_FIELDS)
def test_a_malformed_hash_field_is_an_error_even_without_verify(result, tmp_path, ext, bad, message):
    path = saved(result, tmp_path, ext)
    change_meta(path, lambda m: m.update(content_hash=bad(m["content_hash"])))
    for call in (read_metadata, inspect_file, lambda p: load_quantized(p, model=tiny(), verify=False)):
        with pytest.raises(QuantizedFileError) as err:
            call(path)
        assert str(err.value).startswith(f"{path}: corrupt: metadata field ") and message in str(err.value)


# --- every malformed field is named ---


def _pop(key):
    return lambda d: d.pop(key)


def _set(key, value):
    return lambda d: d.__setitem__(key, value)


def _layer(change):
    return lambda m: change(m["layers"][0])


META_FIELDS = [
    (_pop("format_version"), "'format_version' is missing"),
    (_set("format_version", "1"), "format_version '1' is not a positive integer"),
    (_pop("layers"), "'layers' is missing"),
    (_set("layers", {"0": {}}), "'layers' must be a list of layer records, not dict"),
    (_set("layers", ["0"]), "'layers[0]' must be an object"),
    (_layer(_pop("name")), "'layers[0].name' is missing"),
    (_layer(_set("name", 0)), "'layers[0].name' must be a string, not int"),
    (_layer(_pop("type")), "'layers[0].type' is missing"),
    (_layer(_set("type", None)), "'layers[0].type' must be a string, not NoneType"),
    (_layer(_set("dtype", 8)), "'layers[0].dtype' must be a string or null"),
    (_layer(_set("group_size", "128")), "'layers[0].group_size' must be an integer or null"),
    (_layer(_set("shape", "24x16")), "'layers[0].shape' must be a list of non-negative integers"),
    (_layer(_set("weights", [1])), "'layers[0].weights' must map weight names to shapes"),
    (_layer(_set("weight_sqnr_db", [1])), "'layers[0].weight_sqnr_db' must be a number or null"),
    (_set("aliases", ["a"]), "'aliases' must map tensor names to tensor names"),
    (_set("skipped", "none"), "'skipped' must be a list"),
    (_set("skipped", [{"name": "x"}]), "'skipped[0]' must be an object with string name, type and reason"),
    (_set("model_class", 3), "'model_class' must be a string"),
]
META_FIELDS += [
    (_set(key, ["x"]), f"'{key}' must be an object, not list")
    for key in ("versions", "config", "calibration", "source", "report")
]
META_FIELDS += [
    (lambda m: m["source"].update(script=1), "'source.script' must be a string or null"),
    (lambda m: m["source"].update(entry_kwargs=[]), "'source.entry_kwargs' must be an object"),
    (lambda m: m["calibration"].update(files_sha256=5), "'calibration.files_sha256' must be a string or null"),
    (lambda m: m["report"].update(original_bytes="big"), "'report.original_bytes' must be a number or null"),
    (lambda m: m["report"].update(layers={}), "'report.layers' must be a list of objects"),
    (lambda m: m["report"]["layers"][0].update(output_sqnr_db={}), "'report.layers[0].output_sqnr_db' must be"),
    (lambda m: m["report"].update(warnings="w"), "'report.warnings' must be a list of strings"),
]


@pytest.mark.parametrize("ext", FORMATS)
@pytest.mark.parametrize("change, message", META_FIELDS)
def test_each_malformed_metadata_field_is_named(result, tmp_path, ext, change, message):
    path = saved(result, tmp_path, ext)
    change_meta(path, change)
    for call in (read_metadata, inspect_file, lambda p: load_quantized(p, model=tiny(), verify=False)):
        with pytest.raises(QuantizedFileError) as err:
            call(path)
        assert str(err.value).startswith(f"{path}: corrupt: ") and message in str(err.value)


def _entry(change):
    return lambda h: change(h["0.weight"])


HEADER_FIELDS = [
    (_entry(_pop("dtype")), "tensor '0.weight': 'dtype' is missing"),
    (_entry(_set("dtype", 8)), "tensor '0.weight': 'dtype' is 8, not a dtype code"),
    (_entry(_set("dtype", "Q4")), "tensor '0.weight': 'dtype' is 'Q4', not a dtype code"),
    (_entry(_pop("shape")), "tensor '0.weight': 'shape' is missing"),
    (_entry(_set("shape", "24x16")), "tensor '0.weight': 'shape' is '24x16', not a list of non-negative integers"),
    (_entry(_set("shape", [-24, -16])), "'shape' is [-24, -16], not a list of non-negative integers"),
    (_entry(_set("shape", [16, 16])), "tensor '0.weight': 'data_offsets' span 384 bytes, but I8 [16, 16] needs 256"),
    (_entry(_pop("data_offsets")), "tensor '0.weight': 'data_offsets' is missing"),
    (_entry(_set("data_offsets", [0])), "tensor '0.weight': 'data_offsets' is [0], not a pair of integers"),
    (_entry(_set("data_offsets", ["0", "1"])), "'data_offsets' is ['0', '1'], not a pair of integers"),
    (_set("0.weight", [1, 2]), "the safetensors header entry of tensor '0.weight' is not an object"),
    (_set("__metadata__", ["x"]), "the safetensors header field '__metadata__' is not an object"),
    (lambda h: h["__metadata__"].update(mono_quant=5), "header field '__metadata__.mono_quant' is not a string"),
]


@pytest.mark.parametrize("change, message", HEADER_FIELDS)
def test_each_malformed_safetensors_header_field_is_named(result, tmp_path, change, message):
    path = saved(result, tmp_path, ".safetensors")
    change_header(path, change)
    for call in (read_metadata, inspect_file, lambda p: load_quantized(p, model=tiny(), verify=False)):
        with pytest.raises(QuantizedFileError) as err:
            call(path)
        assert str(err.value).startswith(f"{path}: corrupt: ") and message in str(err.value)


PT_FIELDS = [
    (_pop("state_dict"), "the field 'state_dict' is missing"),
    (_set("state_dict", [torch.zeros(1)]), "the field 'state_dict' is not a dict of named tensors"),
    (lambda o: o["state_dict"].update({"x": "text"}), "the field 'state_dict' is not a dict of named tensors"),
    (_set("mono_quant", {"format_version": 1}), "the field 'mono_quant' is a dict, not a JSON string"),
]


@pytest.mark.parametrize("change, message", PT_FIELDS)
def test_each_malformed_pt_field_is_named(result, tmp_path, change, message):
    path = saved(result, tmp_path, ".pt")
    obj = torch.load(path, weights_only=True)
    change(obj)
    torch.save(obj, path)
    for call in (read_metadata, inspect_file, lambda p: load_quantized(p, model=tiny(), verify=False)):
        with pytest.raises(QuantizedFileError) as err:
            call(path)
        assert str(err.value) == f"{path}: corrupt: {message}"


# --- random damage: an error, or exactly the saved model; never a silently different one ---


def _damage(data: bytes, rng: random.Random) -> bytes:
    data = bytearray(data)
    kind = rng.choice(["bit", "byte", "burst", "truncate", "tensor-bit"])
    if kind == "truncate":
        return bytes(data[: rng.randrange(len(data))])
    if kind == "tensor-bit":  # the last quarter of the file: tensor data in both formats
        at = rng.randrange(len(data) * 3 // 4, len(data))
        data[at] ^= 1 << rng.randrange(8)
    elif kind == "bit":
        at = rng.randrange(len(data))
        data[at] ^= 1 << rng.randrange(8)
    elif kind == "byte":
        at = rng.randrange(len(data))
        data[at] = (data[at] + rng.randrange(1, 256)) % 256
    else:
        at = rng.randrange(len(data))
        data[at : at + rng.randint(2, 16)] = bytes(rng.randrange(256) for _ in range(rng.randint(2, 16)))
    return bytes(data)


@pytest.mark.parametrize("ext", FORMATS)
def test_random_damage_never_loads_a_different_model(result, inputs, tmp_path, ext):
    path = saved(result, tmp_path, ext)
    original, expected = path.read_bytes(), result.model(inputs)
    rng = random.Random(f"damage{ext}")
    outcomes = {"error": 0, "identical": 0}
    start = time.perf_counter()
    for trial in range(100):
        damaged = _damage(original, rng)
        if damaged == original:
            continue
        path.write_bytes(damaged)
        try:
            loaded = load_quantized(path, model=tiny())
        except MonoQuantError as exc:
            assert str(exc).startswith(f"{path}: "), (trial, str(exc))
            outcomes["error"] += 1
            continue
        assert torch.equal(loaded(inputs), expected), f"trial {trial}: a damaged file loaded a different model"
        outcomes["identical"] += 1
    assert time.perf_counter() - start < 20
    assert outcomes["error"] > 50, outcomes  # most damage is found


# --- a killed save's temporary file ---


def dead_pid() -> int:
    child = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    return int(child.stdout)


def test_temporary_names_carry_host_and_pid(tmp_path):
    prefix = leftovers.temp_prefix(str(tmp_path / "m.safetensors"))
    assert prefix == f".m.safetensors.mq-{leftovers.host_id()}-{os.getpid()}-"
    assert leftovers.OWN.fullmatch(prefix + "abcd_123.tmp")


def test_the_next_save_removes_only_dead_saves_leftovers(result, tmp_path):
    host, old = leftovers.host_id(), time.time() - 2 * leftovers.STALE_S
    with subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"]) as sleeper:
        try:
            files = {
                "dead": f".a.int8.safetensors.mq-{host}-{dead_pid()}-k2x9_0pq.tmp",
                "dead other target": f".b.PT.mq-{host}-{dead_pid()}-zzzzzzzz.tmp",
                "live child": f".a.int8.safetensors.mq-{host}-{sleeper.pid}-abcdefgh.tmp",
                "this process": f".tiny.pt.mq-{host}-{os.getpid()}-abcdefgh.tmp",
                "other machine": f".a.pt.mq-0123abcd-{dead_pid()}-abcdefgh.tmp",
                "other machine, stale": f".a.pt.mq-0123abcd-{dead_pid()}-abcdefg1.tmp",
                "no pid, recent": ".a.pt.abcdefgh.tmp",
                "no pid, stale": ".a.pth.abcdefg2.tmp",
                "user file": f".a.int8.safetensors.mq-{host}-{dead_pid()}-notes.tmp",
                "user file, stale": ".notes.txt.abcdefgh.tmp",
                "user file, no dot": f"a.pt.mq-{host}-{dead_pid()}-abcdefgh.tmp",
            }
            for name in files.values():
                (tmp_path / name).write_bytes(b"partial")
            for key in ("other machine, stale", "no pid, stale", "user file, stale"):
                os.utime(tmp_path / files[key], (old, old))
            save_quantized(result, tmp_path / "tiny.pt")
            gone = {key for key, name in files.items() if not (tmp_path / name).exists()}
            assert gone == {"dead", "dead other target", "other machine, stale", "no pid, stale"}
            assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith(".")) == [
                files["user file, no dot"],
                "tiny.pt",
            ]
        finally:
            sleeper.kill()


KILLED_SAVE = """
import sys, time
sys.path.insert(0, {tests!r})
import torch
from test_file_integrity import QuantConfig, quantize, save_quantized, tiny
from mono_quant_core.serialization import atomic

result = quantize(tiny(), QuantConfig(), calibration=[torch.randn(4, 16)])
opened = atomic.open_temp

class Stalled:
    def __init__(self, f):
        self.f = f
    def write(self, data):
        self.f.write(data); self.f.flush()
        print("writing", flush=True); time.sleep(60)
    def __getattr__(self, name):
        return getattr(self.f, name)
    def __enter__(self):
        return self
    def __exit__(self, *exc):
        self.f.close()

atomic.open_temp = lambda fd: Stalled(opened(fd))
save_quantized(result, sys.argv[1])
"""


def test_a_save_killed_with_sigkill_is_cleaned_up_by_the_next(result, tmp_path):
    script = KILLED_SAVE.format(tests=os.path.dirname(__file__))
    target = tmp_path / "m.safetensors"
    with subprocess.Popen([sys.executable, "-c", script, str(target)], stdout=subprocess.PIPE, text=True) as child:
        try:
            assert child.stdout.readline() == "writing\n"
        finally:
            child.kill()  # SIGKILL: no clean-up runs
    left = [p.name for p in tmp_path.iterdir()]
    assert len(left) == 1 and leftovers.OWN.fullmatch(left[0]) and f"-{child.pid}-" in left[0]
    save_quantized(result, target)
    assert [p.name for p in tmp_path.iterdir()] == ["m.safetensors"]
