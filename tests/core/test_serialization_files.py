"""The files themselves: layout, official readers, metadata, sizes, tied weights, output paths."""

from __future__ import annotations

import json
import os

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save, save_file
from torch import nn
from zoo import make

from mono_quant_core import ConfigError, QuantConfig, load_quantized, quantize, read_metadata, save_quantized
from mono_quant_core.modules.linear import QuantizedLinear
from mono_quant_core.quantizer import QuantResult
from mono_quant_core.report import LayerReport, QuantReport
from mono_quant_core.serialization import FORMAT_VERSION, estimate_file_bytes
from mono_quant_core.serialization.file_tensors import file_tensors


def linear_heavy(width: int = 512) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(width, width), nn.ReLU(), nn.Linear(width, width)).eval()


@pytest.fixture(scope="module")
def mlp_result():
    model, data = make("mlp")
    result = quantize(model, QuantConfig(), calibration=data[:3])
    result.source = {
        "script": "/home/someone/models/mlp.py",
        "script_path": "/home/someone/models/mlp.py",
        "entry": "MLP",
        "entry_kwargs": {},
        "checkpoint": "/data/mlp.pt",
        "checkpoint_path": "/data/mlp.pt",
        "checkpoint_sha256": "ab" * 32,
    }
    return model, data, result


def test_safetensors_bytes_equal_the_official_writer(mlp_result, tmp_path):
    _, _, result = mlp_result
    path = tmp_path / "m.safetensors"
    save_quantized(result, path)
    tensors, _ = file_tensors(result.model)
    with safe_open(path, "pt") as f:
        metadata = f.metadata()
    assert path.read_bytes() == save(tensors, metadata=metadata)


def test_official_readers_open_both_formats(mlp_result, tmp_path):
    _, _, result = mlp_result
    st, pt = tmp_path / "m.safetensors", tmp_path / "m.pt"
    save_quantized(result, st)
    save_quantized(result, pt)
    expected = result.model.state_dict()
    with safe_open(st, "pt") as f:
        metadata = f.metadata()
        assert set(f.keys()) == set(expected)
    assert set(metadata) == {"mono_quant"} and all(isinstance(v, str) for v in metadata.values())
    plain = torch.load(pt, weights_only=True)
    assert set(plain) == {"state_dict", "mono_quant"} and isinstance(plain["mono_quant"], str)
    assert json.loads(plain["mono_quant"]) == json.loads(metadata["mono_quant"])
    for tensors in (load_file(st), plain["state_dict"]):
        assert set(tensors) == set(expected)
        for k, v in expected.items():
            assert tensors[k].dtype == v.dtype and torch.equal(tensors[k], v), k


def test_metadata_records_everything_and_no_absolute_paths(mlp_result, tmp_path):
    _, _, result = mlp_result
    path = tmp_path / "m.safetensors"
    save_quantized(result, path)
    meta = read_metadata(path)
    assert meta["format_version"] == FORMAT_VERSION == 1
    assert meta["versions"]["torch"] == torch.__version__.split("+")[0]
    assert set(meta["versions"]) >= {"mono_quant", "torch", "safetensors", "python"}
    assert meta["config"] == result.config.to_dict()
    assert meta["source"] == {
        "script": "mlp.py",
        "entry": "MLP",
        "entry_kwargs": {},
        "checkpoint": "mlp.pt",
        "checkpoint_sha256": "ab" * 32,
    }
    assert "/home/someone" not in json.dumps(meta) and "/data/" not in json.dumps(meta)
    names = [r["name"] for r in meta["layers"]]
    assert names == ["net.0", "net.2", "net.4"]
    for record in meta["layers"]:
        module = result.model.get_submodule(record["name"])
        assert {k: v for k, v in record.items() if k not in ("name", "weight_sqnr_db")} == json.loads(
            json.dumps(module.quant_meta())
        )
        assert record["weight_sqnr_db"] == pytest.approx(result.report.layer(record["name"]).weight_sqnr_db)
        assert record["type"] == "Linear" and record["dtype"] == "int8"
    assert meta["skipped"] == [{"name": s.name, "type": s.type, "reason": s.reason} for s in result.report.skipped]
    assert meta["calibration"] == json.loads(json.dumps(result.calibration_info))
    report = dict(result.report.to_dict(), file_bytes=None, estimated_file_bytes=None)
    assert meta["report"] == json.loads(json.dumps(report))
    assert meta["aliases"] == {}


def test_estimate_is_exact_and_save_sets_file_bytes(mlp_result, tmp_path):
    _, _, result = mlp_result
    ratio = result.report.compression_ratio
    estimate = estimate_file_bytes(result)
    written = save_quantized(result, tmp_path / "m.safetensors")
    assert written == estimate == os.path.getsize(tmp_path / "m.safetensors")
    assert result.report.file_bytes == written
    assert result.report.compression_ratio == ratio  # stays the in-memory ratio
    assert estimate_file_bytes(result) == estimate  # file_bytes is not part of the file


@pytest.mark.parametrize("on_failure", ["error", "warn"])
def test_the_estimate_quantize_records_is_the_size_save_writes(tmp_path, on_failure):
    """quantize() estimates last, once the report is final (warnings of on_failure="warn" included)."""
    model = linear_heavy(64)
    data = [torch.randn(2, 64) for _ in range(3)]
    config = QuantConfig(on_failure=on_failure, min_output_sqnr_db=None if on_failure == "error" else 500.0)
    result = quantize(model, config, calibration=data)
    assert (on_failure == "warn") == any("check failed" in w for w in result.report.warnings)
    written = save_quantized(result, tmp_path / "m.safetensors")
    assert result.report.estimated_file_bytes == written


@pytest.mark.parametrize(
    "config,limit",
    [
        (QuantConfig(dtype="int8", mode="weight-only"), 0.27),
        (QuantConfig(dtype="int4", mode="weight-only", granularity="per-group", group_size=128), 0.16),
    ],
)
@pytest.mark.parametrize("ext", [".safetensors", ".pt"])
def test_size_targets(tmp_path, config, limit, ext):
    model = linear_heavy()
    float_path = tmp_path / "float.safetensors"
    save_file(model.state_dict(), float_path)
    result = quantize(model, config, validate=False)
    written = save_quantized(result, tmp_path / f"q{ext}")
    ratio = written / float_path.stat().st_size
    assert ratio <= limit, f"{config.dtype}{ext}: {ratio:.3f}x > {limit}x"


class Tied(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(10, 8)
        self.mid = nn.Linear(8, 8)
        self.head = nn.Linear(8, 10, bias=False)
        self.head.weight = self.embed.weight

    def forward(self, tokens):
        return self.head(torch.relu(self.mid(self.embed(tokens))))


@pytest.mark.parametrize("ext", [".safetensors", ".pt"])
def test_tied_weights_are_stored_once_and_tied_again(tmp_path, ext):
    torch.manual_seed(0)
    model = Tied().eval()
    result = quantize(model, QuantConfig(layers=["mid"]), calibration=[torch.randint(0, 10, (2, 3))])
    assert result.model.head.weight.data_ptr() == result.model.embed.weight.data_ptr()
    path = tmp_path / f"tied{ext}"
    save_quantized(result, path)
    assert read_metadata(path)["aliases"] == {"head.weight": "embed.weight"}
    if ext == ".safetensors":
        assert "head.weight" not in load_file(path)
    loaded = load_quantized(path, model=Tied())
    assert loaded.head.weight is loaded.embed.weight
    tokens = torch.randint(0, 10, (3, 4))
    assert torch.equal(loaded(tokens), result.model(tokens))


class Block(nn.Module):
    def __init__(self, make):
        super().__init__()
        self.self_attn = nn.ModuleDict({k: make() for k in ("q_proj", "k_proj", "v_proj", "o_proj")})
        self.mlp = nn.ModuleDict({k: make() for k in ("up_proj", "down_proj")})


def deep(make) -> nn.Module:
    model = nn.Sequential()
    model.layers = nn.ModuleList(Block(make) for _ in range(500))
    return model


def test_three_thousand_layers_stay_far_below_the_header_limit(tmp_path):
    # Built with from_meta + load_state_dict: the header size does not depend on the values.
    config = QuantConfig(mode="static")
    first = QuantizedLinear.from_float(nn.Linear(4, 4), config)
    first.set_input_qparams(0.1, 3)

    def make():
        q = QuantizedLinear.from_meta(first.quant_meta(), nn.Linear(4, 4))
        q.load_state_dict(first.state_dict())
        return q

    model = deep(make)
    names = [n for n, m in model.named_modules() if isinstance(m, QuantizedLinear)]
    report = QuantReport(
        layers=[
            LayerReport(
                name=n,
                type="Linear",
                dtype="int8",
                scheme="symmetric",
                granularity="per-channel",
                shape=[4, 4],
                weight_sqnr_db=38.123456789,
                output_sqnr_db=31.987654321,
                original_bytes=80,
                quantized_bytes=44,
                kernel="fbgemm-dynamic",
            )
            for n in names
        ]
    )
    result = QuantResult(model=model, report=report, config=config)
    path = tmp_path / "deep.safetensors"
    save_quantized(result, path)
    with open(path, "rb") as f:
        header_bytes = int.from_bytes(f.read(8), "little")
    # About 3.1 MB of layer records and report, plus about 155 bytes of content hash
    # (dtype, shape, SHA-256) for each of the 15000 tensors: still far below 100 MB.
    assert len(names) == 3000 and header_bytes < 6_000_000, header_bytes
    meta = read_metadata(path)
    assert [r["name"] for r in meta["layers"]] == names


def test_extension_chooses_the_format(mlp_result, tmp_path):
    _, _, result = mlp_result
    for name in ("m.bin", "m.ckpt", "m", "m.safetensor"):
        with pytest.raises(ConfigError, match=r"\.safetensors, \.pt, \.pth") as err:
            save_quantized(result, tmp_path / name)
        assert name in str(err.value)
    save_quantized(result, tmp_path / "m.PTH")
    assert torch.load(tmp_path / "m.PTH", weights_only=True)["mono_quant"]
    assert not [p for p in tmp_path.iterdir() if p.name != "m.PTH"]


def test_refuses_to_overwrite_the_checkpoint_or_the_script(tmp_path):
    model, data = make("mlp")
    ckpt, script = tmp_path / "ckpt.pt", tmp_path / "model.py"
    torch.save(model.state_dict(), ckpt)
    script.write_text("# the model script\n")
    before = ckpt.read_bytes()
    result = quantize(model, QuantConfig(), calibration=data[:2])
    result.source = {
        "script": "model.py",
        "script_path": str(script),
        "checkpoint": "ckpt.pt",
        "checkpoint_path": str(ckpt),
    }
    with pytest.raises(ConfigError, match="input checkpoint"):
        save_quantized(result, ckpt)
    (tmp_path / "link.pt").symlink_to(ckpt)
    with pytest.raises(ConfigError, match="input checkpoint"):
        save_quantized(result, tmp_path / "link.pt")
    assert ckpt.read_bytes() == before
    os.rename(script, tmp_path / "model.pt")
    result.source["script_path"] = str(tmp_path / "model.pt")
    with pytest.raises(ConfigError, match="model script"):
        save_quantized(result, tmp_path / "model.pt")
    with pytest.raises(ConfigError, match="is a folder"):
        (tmp_path / "dir.pt").mkdir()
        save_quantized(result, tmp_path / "dir.pt")
    with pytest.raises(ConfigError, match="does not exist"):
        save_quantized(result, tmp_path / "missing" / "q.pt")


def test_the_callers_model_and_result_are_unchanged_by_save_and_load(tmp_path):
    model, data = make("cnn")
    result = quantize(model, QuantConfig(), calibration=data[:2])
    before = {k: v.clone() for k, v in result.model.state_dict().items()}
    save_quantized(result, tmp_path / "c.safetensors")
    reference = make("cnn")[0]
    ref_state = {k: v.clone() for k, v in reference.state_dict().items()}
    loaded = load_quantized(tmp_path / "c.safetensors", model=reference)
    for k, v in result.model.state_dict().items():
        assert torch.equal(v, before[k]), k
    for k, v in reference.state_dict().items():
        assert torch.equal(v, ref_state[k]), k
    assert type(reference.head) is nn.Linear and loaded.head is not reference.head
    x = data[0]
    assert torch.equal(loaded(x), result.model(x))
