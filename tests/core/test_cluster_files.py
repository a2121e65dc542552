"""A job's inputs for a Ray worker: the manifest, the same-files check, and shipped files written back."""

from __future__ import annotations

import json
import os

import pytest
from test_cluster import MODEL, make_job, write_project

from mono_quant_core.cluster import files
from mono_quant_core.jobs import Job


def test_the_manifest_lists_script_helpers_checkpoint_and_calibration(tmp_path):
    root = write_project(tmp_path)
    (root / "helpers.py").write_text("X = 1\n", encoding="utf-8")
    (root / "notes.txt").write_text("not an input\n", encoding="utf-8")
    man = files.manifest(make_job(root, "out.safetensors"))
    by_role = {role: sorted(f.relative for f in man.files if f.role == role) for role in files.ROLES}
    assert by_role == {
        "script": ["helpers.py", "model.py"],
        "checkpoint": ["ckpt.pt"],
        "calibration": [f"calib/x{i}.pt" for i in range(10)],
    }
    assert man.files[0].relative == "model.py"  # the script itself first
    assert dict(man.roots) == {
        "script": str(root / "model.py"),
        "checkpoint": str(root / "ckpt.pt"),
        "calibration": str(root / "calib"),
    }
    assert man.total_bytes == sum(os.path.getsize(f.path) for f in man.files)
    assert files.differences(man.files) == []  # this machine sees them all


def test_a_sharded_checkpoint_brings_its_shards(tmp_path):
    root = write_project(tmp_path)
    for name in ("m-1.safetensors", "m-2.safetensors"):
        (root / name).write_bytes(name.encode())
    index = {"metadata": {}, "weight_map": {"a": "m-1.safetensors", "b": "m-2.safetensors", "c": "m-1.safetensors"}}
    (root / "m.safetensors.index.json").write_text(json.dumps(index), encoding="utf-8")
    job = Job(
        script=str(root / "model.py"),
        checkpoint=str(root / "m.safetensors.index.json"),
        output=str(root / "out.safetensors"),
    )
    checkpoint = [f.relative for f in files.manifest(job).files if f.role == "checkpoint"]
    assert checkpoint == ["m.safetensors.index.json", "m-1.safetensors", "m-2.safetensors"]


def test_a_changed_or_missing_file_is_a_difference(tmp_path):
    root = write_project(tmp_path)
    man = files.manifest(make_job(root, "out.safetensors"))
    (root / "calib" / "x3.pt").write_bytes(b"other bytes")
    os.remove(root / "calib" / "x4.pt")
    assert files.differences(man.files) == [str(root / "calib" / "x3.pt"), str(root / "calib" / "x4.pt")]


def test_shipped_files_are_written_under_the_same_names(tmp_path):
    root = write_project(tmp_path / "caller", MODEL)
    man = files.manifest(make_job(root, "out.safetensors"))
    contents = {f.path: files.read_bytes(f.path) for f in man.files}
    roots = files.materialize(man, contents, str(tmp_path / "worker"))
    assert roots == {
        "script": str(tmp_path / "worker" / "script" / "model.py"),
        "checkpoint": str(tmp_path / "worker" / "checkpoint" / "ckpt.pt"),
        "calibration": str(tmp_path / "worker" / "calibration" / "calib"),
    }
    for f in man.files:
        written = tmp_path / "worker" / f.role / f.relative
        assert written.read_bytes() == contents[f.path]
    first = man.files[0]
    contents[first.path] = contents[first.path] + b"\n"
    with pytest.raises(OSError, match="do not match the file's SHA-256"):
        files.materialize(man, contents, str(tmp_path / "again"))


def test_a_remote_output_replaces_an_earlier_one_whole(tmp_path):
    """Files a worker wrote come back as one set: an earlier single-file output at the same path
    is removed when a sharded one arrives (its stale file would be read instead), and a failure
    leaves the earlier output as it was."""
    import torch
    from torch import nn

    from mono_quant_core import QuantConfig, load_quantized, quantize, save_quantized
    from mono_quant_core.serialization.read import resolve

    out = tmp_path / "model.safetensors"
    old = quantize(nn.Linear(8, 8), QuantConfig(mode="weight-only"), validate=False)
    save_quantized(old, out)
    torch.manual_seed(1)
    new = quantize(nn.Sequential(nn.Linear(64, 64), nn.Linear(64, 64)), QuantConfig(), validate=False)
    elsewhere = tmp_path / "worker"
    elsewhere.mkdir()
    save_quantized(new, elsewhere / "model.safetensors", max_shard_bytes=4096)
    blobs = {p.name: p.read_bytes() for p in elsewhere.iterdir()}
    assert len(blobs) > 2 and "model.safetensors" not in blobs
    from mono_quant_core.cluster.remote import Done
    from mono_quant_core.cluster.runner import RayCluster

    job = make_job(tmp_path, "model.safetensors")
    done = Done(blobs, "model.safetensors.index.json", sum(map(len, blobs.values())), new.report, None, "node")
    outcome = RayCluster("local")._write(job, done, 0.0)  # what a finished remote job does here
    assert sorted(os.listdir(tmp_path)) == sorted([*blobs, "worker"])  # the old single file is gone
    assert outcome.output == resolve(str(out)) and outcome.output.endswith(".index.json")
    reloaded = load_quantized(str(out), model=nn.Sequential(nn.Linear(64, 64), nn.Linear(64, 64)))
    assert torch.equal(reloaded.state_dict()["0.weight"], new.model.state_dict()["0.weight"])


class CancelAfter:
    """A cancel token that turns set after ``n`` checks (the first checks pass)."""

    def __init__(self, n: int):
        self.n = n

    def is_set(self) -> bool:
        self.n -= 1
        return self.n < 0


def test_hashing_a_large_input_stops_at_cancel(tmp_path, monkeypatch):
    from mono_quant_core.errors import Cancelled

    root = write_project(tmp_path)
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(64 * 1024) * 16)
    monkeypatch.setattr(files, "_CHUNK", 64 * 1024)
    reads = []
    real_open = open

    def counting_open(path, *args, **kwargs):
        f = real_open(path, *args, **kwargs)
        if os.fspath(path) == str(big):
            real_read = f.read
            f.read = lambda n=-1: reads.append(n) or real_read(n)
        return f

    monkeypatch.setattr("builtins.open", counting_open)
    with pytest.raises(Cancelled):
        files.sha256_of(str(big), CancelAfter(3))
    assert len(reads) == 4  # three blocks hashed, the fourth read sees the cancel: not 16
    assert (str(big), 16 * 64 * 1024) not in {(k[0], k[1]) for k in files._hashes}  # nothing remembered
    job = make_job(root, "out.safetensors")
    with pytest.raises(Cancelled):
        files.manifest(job, CancelAfter(0))


def test_a_cancelled_run_stops_before_shipping_and_lets_go_of_what_it_put(tmp_path, monkeypatch):
    from mono_quant_core.cluster import RayCluster
    from mono_quant_core.errors import Cancelled

    root = write_project(tmp_path)
    put = []

    class FakeRay:
        def put(self, data):
            put.append(len(data))
            return object()

    cluster = RayCluster("local", ship_files=True)
    monkeypatch.setattr(cluster, "_ray", lambda: FakeRay())
    job = make_job(root, "out.safetensors")
    assert len(files.manifest(job).files) > 3  # hashed now: remembered, the run's manifest checks nothing
    with pytest.raises(Cancelled):
        cluster.run_job(job, cancel=CancelAfter(1 + 2))  # run_job's own check, then two files shipped
    assert len(put) == 2  # stopped at the third file, before any task was submitted
    assert cluster._shipped_users == {} and cluster._shipped == {}  # let go of the two it put
