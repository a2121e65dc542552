"""inspect_file / format_inspect: what `mono-quant inspect FILE [--json]` prints."""

from __future__ import annotations

import json
import os

import pytest
import torch
from zoo import make

from mono_quant_core import QuantConfig, QuantizedFileError, quantize, save_quantized
from mono_quant_core.inspect_file import format_inspect, inspect_file


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    model, data = make("cnn")
    config = QuantConfig(mode="static", exclude=["features.3"])
    result = quantize(model, config, calibration=data)
    result.source = {
        "script": "cnn.py",
        "entry": "CNN",
        "entry_kwargs": {},
        "checkpoint": "cnn.pt",
        "checkpoint_sha256": "0123456789abcdef" * 4,
    }
    folder = tmp_path_factory.mktemp("inspect")
    paths = {ext: folder / f"cnn{ext}" for ext in (".safetensors", ".pt")}
    for path in paths.values():
        save_quantized(result, path)
    return result, paths


@pytest.mark.parametrize("ext", [".safetensors", ".pt"])
def test_inspect_file_fields(saved, ext):
    result, paths = saved
    info = inspect_file(paths[ext])
    assert json.loads(json.dumps(info, allow_nan=False)) == info  # JSON-ready as it is
    assert info["file"] == f"cnn{ext}" and info["format"] == ext.lstrip(".").replace("safetensors", "safetensors")
    assert info["format_version"] == 1
    assert info["source"]["script"] == "cnn.py" and info["source"]["checkpoint_sha256"].startswith("0123")
    assert info["config"]["mode"] == "static"
    assert info["calibration"]["method"] == "minmax" and info["calibration"]["samples"] == 8
    assert [r["name"] for r in info["layers"]] == ["features.0", "head"]
    conv = info["layers"][0]
    assert (conv["type"], conv["dtype"], conv["granularity"], conv["shape"]) == (
        "Conv2d",
        "int8",
        "per-channel",
        [16, 3, 3, 3],
    )
    assert conv["weight_sqnr_db"] == pytest.approx(result.report.layer("features.0").weight_sqnr_db)
    assert conv["output_sqnr_db"] == pytest.approx(result.report.layer("features.0").output_sqnr_db)
    skipped = {s["name"]: s["reason"] for s in info["skipped"]}
    assert "features.3" in skipped and "features.1" in skipped
    sizes = info["sizes"]
    assert sizes["file_bytes"] == os.path.getsize(paths[ext])
    assert sizes["original_bytes"] == result.report.original_bytes
    assert sizes["quantized_bytes"] == result.report.quantized_bytes
    assert sizes["file_ratio"] == pytest.approx(result.report.original_bytes / sizes["file_bytes"])
    assert sizes["tensors"] == len(result.model.state_dict())
    metrics = info["metrics"]
    assert metrics["output_sqnr_db"] == pytest.approx(result.report.output_sqnr_db)
    assert metrics["load_test_passed"] is True and metrics["weight_range_valid"] is True


def test_format_inspect_text(saved):
    result, paths = saved
    text = format_inspect(inspect_file(paths[".safetensors"]))
    lines = text.splitlines()
    assert lines[0] == "cnn.safetensors  (safetensors, mono-quant file format 1)"
    assert "cnn.py, entry CNN; checkpoint cnn.pt (sha256 0123456789abcdef…)" in text
    assert "int8, static, symmetric, per-channel, observer minmax" in text
    assert f"{result.report.output_sqnr_db:.1f} dB" in text
    assert "layers (2)" in text and "skipped (" in text
    row = next(line for line in lines if line.strip().startswith("features.0"))
    assert row.split()[:5] == ["features.0", "Conv2d", "int8", "per-channel", "16×3×3×3"]
    assert f"{result.report.layer('features.0').weight_sqnr_db:.1f} dB" in row
    assert "load test passed: yes" in text


def test_inspect_a_foreign_file(tmp_path):
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(2)}, tmp_path / "plain.safetensors")
    with pytest.raises(QuantizedFileError, match="not written by mono-quant"):
        inspect_file(tmp_path / "plain.safetensors")


@pytest.mark.parametrize("ext", [".safetensors", ".pt"])
def test_inspect_verify_checks_the_content_hash(saved, tmp_path, capsys, ext):
    from mono_quant_core.cli.main import main

    result, paths = saved
    n = len(result.model.state_dict())
    assert main(["inspect", str(paths[ext])]) == 0
    assert f"content hash  recorded ({n} tensors), not checked (--verify checks it)" in capsys.readouterr().out
    assert main(["inspect", str(paths[ext]), "--verify"]) == 0
    assert f"\ncontent hash  ok ({n} tensors)\n" in capsys.readouterr().out
    assert main(["inspect", str(paths[ext]), "--verify", "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)["content_hash"]
    assert shown == {"recorded": True, "tensors": n, "verified": True}

    # One flipped bit in the last stored tensor's bytes (the end of a .safetensors file;
    # in a .pt file, found by its bytes in the archive).
    damaged = tmp_path / f"damaged{ext}"
    data = bytearray(paths[ext].read_bytes())
    if ext == ".safetensors":
        data[-1] ^= 0x01
    else:
        bias = result.model.state_dict()["head.bias"].numpy().tobytes()
        data[data.index(bias)] ^= 0x01
    damaged.write_bytes(bytes(data))
    assert main(["inspect", str(damaged)]) == 0  # without --verify, the tensors are not read
    capsys.readouterr()
    assert main(["inspect", str(damaged), "--verify"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith(f"mono-quant: error: {damaged}: corrupt: the bytes of tensor ")
    assert "differ from their SHA-256 recorded when the file was written" in captured.err


def test_inspect_counts_layer_overrides_and_shows_each_layers_dtype(tmp_path):
    model, data = make("cnn")
    config = QuantConfig(layer_overrides={"head": {"dtype": "fp16"}, "features.3": {"dtype": "float"}})
    save_quantized(quantize(model, config, calibration=data), tmp_path / "mixed.safetensors")
    info = inspect_file(tmp_path / "mixed.safetensors")
    text = format_inspect(info)
    assert "config        int8, dynamic, symmetric, per-channel, 2 layer overrides" in text
    assert {r["name"]: r["dtype"] for r in info["layers"]} == {"features.0": "int8", "head": "fp16"}
    head = next(line for line in text.splitlines() if line.strip().startswith("head"))
    assert head.split()[:3] == ["head", "Linear", "fp16"]


def test_inspect_shows_algorithm_coverage_and_each_layers_algorithm(tmp_path):
    model, data = make("cnn")
    config = QuantConfig(dtype="int4", mode="weight-only", algorithm="hqq", bias_correction=True)
    result = quantize(model, config, calibration=data)
    save_quantized(result, tmp_path / "hqq.safetensors")
    info = inspect_file(tmp_path / "hqq.safetensors")
    assert info["algorithm"]["algorithm"] == "hqq" and info["algorithm"]["bias_correction"] is True
    assert info["coverage"]["share"] == pytest.approx(result.report.coverage["share"])
    assert {r["name"]: (r["algorithm"], r["bias_corrected"]) for r in info["layers"]} == {
        layer.name: (layer.algorithm, layer.bias_corrected) for layer in result.report.layers
    }
    text = format_inspect(info)
    assert "algorithm     HQQ (20 iterations) + bias correction" in text
    share = 100 * result.report.coverage["share"]
    assert f"coverage      {share:.1f} % of weight bytes quantized" in text
    row = next(line for line in text.splitlines() if line.strip().startswith("features.0"))
    assert row.rstrip().endswith("hqq + bias corr.")
