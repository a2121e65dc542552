"""Failures: atomic writes (disk full, Ctrl-C), corrupt and foreign files, versions, mismatches."""

from __future__ import annotations

import dataclasses
import errno
import json

import pytest
import torch
from failing_files import fail_writes_after
from safetensors.torch import save_file
from torch import nn
from zoo import MLP, make

from mono_quant_core import QuantConfig, QuantizedFileError, load_quantized, quantize, read_metadata, save_quantized
from mono_quant_core.serialization import atomic

FORMATS = [".safetensors", ".pt"]


@pytest.fixture(scope="module")
def result():
    model, data = make("mlp")
    return quantize(model, QuantConfig(), calibration=data[:2])


@pytest.mark.parametrize("ext", FORMATS)
@pytest.mark.parametrize("earlier", [False, True])
def test_disk_full_leaves_no_partial_file(result, tmp_path, monkeypatch, ext, earlier):
    target = tmp_path / f"model{ext}"
    if earlier:
        target.write_bytes(b"the earlier file")
    fail_writes_after(monkeypatch, 3000, OSError(errno.ENOSPC, "No space left on device"))
    with pytest.raises(QuantizedFileError, match="disk full") as err:
        save_quantized(result, target)
    assert str(target) in str(err.value)
    assert [p.name for p in tmp_path.iterdir()] == ([target.name] if earlier else [])
    if earlier:
        assert target.read_bytes() == b"the earlier file"
    assert result.report.file_bytes is None or result.report.file_bytes > 0


@pytest.mark.parametrize("ext", FORMATS)
def test_interruption_mid_write_keeps_the_earlier_file(result, tmp_path, monkeypatch, ext):
    target = tmp_path / f"model{ext}"
    target.write_bytes(b"the earlier file")
    fail_writes_after(monkeypatch, 5000, KeyboardInterrupt())
    with pytest.raises(KeyboardInterrupt):
        save_quantized(result, target)
    assert [p.name for p in tmp_path.iterdir()] == [target.name]
    assert target.read_bytes() == b"the earlier file"


def test_fsync_failure_and_permission_errors_name_the_problem(result, tmp_path, monkeypatch):
    target = tmp_path / "m.safetensors"
    monkeypatch.setattr(atomic.os, "fsync", lambda fd: (_ for _ in ()).throw(OSError(errno.EIO, "I/O error")))
    with pytest.raises(QuantizedFileError, match="I/O error"):
        save_quantized(result, target)
    monkeypatch.undo()

    def refuse(*args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(atomic.tempfile, "mkstemp", refuse)
    with pytest.raises(QuantizedFileError, match="permission denied") as err:
        save_quantized(result, target)
    assert str(target) in str(err.value)
    assert list(tmp_path.iterdir()) == []


def test_new_file_gets_ordinary_permissions(result, tmp_path):
    import os

    save_quantized(result, tmp_path / "m.pt")
    umask = os.umask(0)
    os.umask(umask)
    assert (tmp_path / "m.pt").stat().st_mode & 0o777 == 0o666 & ~umask
    (tmp_path / "m.pt").chmod(0o640)
    save_quantized(result, tmp_path / "m.pt")
    assert (tmp_path / "m.pt").stat().st_mode & 0o777 == 0o640


def written(result, tmp_path, ext: str):
    path = tmp_path / f"good{ext}"
    save_quantized(result, path)
    return path


@pytest.mark.parametrize("ext", FORMATS)
@pytest.mark.parametrize("keep", [0.5, 0.999])
def test_truncated_files(result, tmp_path, ext, keep):
    path = written(result, tmp_path, ext)
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(QuantizedFileError, match=r"truncated|corrupt") as err:
        load_quantized(path, model=MLP())
    assert str(path) in str(err.value)


@pytest.mark.parametrize(
    "content,message",
    [
        (b"", "empty"),
        (b"\x00" * 3, "truncated"),
        (bytes(range(256)) * 40, "corrupt|truncated"),
        (b"PK\x03\x04" + b"\x00" * 200, "corrupt"),
        ((40).to_bytes(8, "little") + b"{not json" + b" " * 31, "not valid JSON"),
    ],
)
def test_garbage_files(tmp_path, content, message):
    path = tmp_path / "bad.safetensors"
    path.write_bytes(content)
    for call in (read_metadata, lambda p: load_quantized(p, model=MLP())):
        with pytest.raises(QuantizedFileError, match=message) as err:
            call(path)
        assert str(path) in str(err.value)


def test_missing_file(tmp_path):
    with pytest.raises(QuantizedFileError, match="no such file"):
        read_metadata(tmp_path / "nope.safetensors")


def test_plain_files_say_how_to_load_them(tmp_path):
    state = MLP().state_dict()
    st, pt = tmp_path / "plain.safetensors", tmp_path / "plain.pt"
    save_file(state, st)
    torch.save(state, pt)
    with pytest.raises(QuantizedFileError, match=r"not written by mono-quant.*safetensors\.torch\.load_file"):
        load_quantized(st, model=MLP())
    with pytest.raises(QuantizedFileError, match=r"not written by mono-quant.*torch\.load\(path, weights_only=True\)"):
        read_metadata(pt)
    torch.save(torch.zeros(3), pt)
    with pytest.raises(QuantizedFileError, match="not written by mono-quant"):
        read_metadata(pt)


class Custom:
    pass


def test_pickled_code_is_never_run(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"mono_quant": "{}", "state_dict": {}, "x": Custom()}, path)
    with pytest.raises(QuantizedFileError, match="pickled code"):
        read_metadata(path)


def rewrite_metadata(path, change) -> None:
    from safetensors import safe_open
    from safetensors.torch import load_file

    with safe_open(path, "pt") as f:
        meta = json.loads(f.metadata()["mono_quant"])
    change(meta)
    save_file(load_file(path), path, metadata={"mono_quant": json.dumps(meta)})


def test_newer_format_version_is_refused(result, tmp_path):
    path = written(result, tmp_path, ".safetensors")
    rewrite_metadata(path, lambda m: m.update(format_version=2, versions={"mono_quant": "9.0"}))
    with pytest.raises(QuantizedFileError, match=r"file format 2 by mono-quant 9\.0.*reads format 1.*upgrade"):
        load_quantized(path, model=MLP())
    rewrite_metadata(path, lambda m: m.update(format_version="one"))
    with pytest.raises(QuantizedFileError, match="format_version"):
        read_metadata(path)


def test_missing_script_names_the_script_from_the_file(result, tmp_path):
    result = dataclasses.replace(
        result, source={"script": "mlp_model.py", "entry": "MLP", "entry_kwargs": {"hidden": 128}}
    )
    path = written(result, tmp_path, ".pt")
    with pytest.raises(QuantizedFileError, match=r"mlp_model\.py, entry 'MLP'.*pass script="):
        load_quantized(path)


class Extra(MLP):
    def __init__(self):
        super().__init__()
        self.extra = nn.Linear(3, 3)


def wrong_type() -> nn.Module:
    model = MLP()
    model.net[2] = nn.Conv1d(128, 128, 1)
    return model


@pytest.mark.parametrize(
    "other,message",
    [
        (lambda: MLP(hidden=96), r"layers of another shape: net\.0 \(file \[128, 64\], model \[96, 64\]\)"),
        (Extra, r"missing from the file: extra\.bias, extra\.weight"),
        (lambda: nn.Sequential(nn.Linear(64, 10)), r"layers missing from the model: net\.0, net\.2, net\.4"),
        (wrong_type, r"layers of another type: net\.2 \(file: Linear, model: Conv1d\)"),
    ],
)
def test_model_that_does_not_match_names_the_layers_and_keys(result, tmp_path, other, message):
    path = written(result, tmp_path, ".safetensors")
    with pytest.raises(QuantizedFileError, match=message) as err:
        load_quantized(path, model=other())
    assert str(path) in str(err.value) and "does not match" in str(err.value)


def test_script_that_does_not_match_names_the_script(result, tmp_path):
    result = dataclasses.replace(result, source={"script": "mlp.py", "entry": None, "entry_kwargs": {}})
    path = written(result, tmp_path, ".pt")
    script = tmp_path / "other.py"
    script.write_text("from torch import nn\n\ndef build_model():\n    return nn.Sequential(nn.Linear(64, 10))\n")
    with pytest.raises(QuantizedFileError, match=r"the model from other\.py does not match.*made from mlp\.py"):
        load_quantized(path, script=script)
