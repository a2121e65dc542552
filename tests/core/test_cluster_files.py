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
