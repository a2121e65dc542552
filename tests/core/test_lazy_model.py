"""Models built without their float weights (open_model(lazy=True)) and streaming quantization.

The lazy path must give exactly the in-memory path's results (every tensor of the saved file
equal, the same layer records and figures) in every mode, read no weight when the model is
opened, and keep peak memory near the quantized model's size: a 1 GB float32 checkpoint
quantized to int8 weight-only from the CLI stays within 0.45 GB over the process's baseline.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from mono_quant_core import QuantConfig, open_model, quantize, read_metadata, save_quantized
from mono_quant_core.loading.lazy_model import lazy_weights

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = """
import torch
from torch import nn


class Net(nn.Module):
    def __init__(self, width: int = 32, depth: int = 3, vocab: int = 40):
        super().__init__()
        self.embed = nn.Embedding(vocab, width)
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.LayerNorm(width), nn.Linear(width, 2 * width), nn.GELU(), nn.Linear(2 * width, width))
            for _ in range(depth)
        )
        self.conv = nn.Conv1d(width, width, 3, padding=1)
        self.norm = nn.BatchNorm1d(width)
        self.head = nn.Linear(width, vocab, bias=False)
        self.head.weight = self.embed.weight  # tied
        self.register_buffer("pos", torch.arange(16).float() / 16, persistent=False)

    def forward(self, ids):
        x = self.embed(ids) + self.pos[: ids.shape[1], None]
        for block in self.blocks:
            x = x + block(x)
        x = x + self.norm(self.conv(x.transpose(1, 2))).transpose(1, 2)
        return self.head(x)


class TouchesWeights(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(8, 8)
        self.scale = float(self.fc.weight.detach().abs().max())  # reads a value: cannot be built without weights

    def forward(self, x):
        return self.fc(x) * self.scale
"""


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("lazy")
    script = folder / "model.py"
    script.write_text(SCRIPT)
    namespace: dict = {}
    exec(compile(SCRIPT, str(script), "exec"), namespace)
    torch.manual_seed(0)
    model = namespace["Net"]().eval()
    model.norm.running_mean.normal_()  # buffers the checkpoint must bring
    model.norm.running_var.uniform_(0.5, 2.0)
    state = {k: v for k, v in model.state_dict().items() if k != "head.weight"}  # tied: stored once
    save_file(state, folder / "net.safetensors")
    # The same tensors as a sharded checkpoint.
    names = sorted(state)
    shards = {
        "net-00001-of-00002.safetensors": names[: len(names) // 2],
        "net-00002-of-00002.safetensors": names[len(names) // 2 :],
    }
    for shard, keys in shards.items():
        save_file({k: state[k] for k in keys}, folder / shard)
    weight_map = {k: shard for shard, keys in shards.items() for k in keys}
    (folder / "net.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    g = torch.Generator().manual_seed(1)
    samples = [torch.randint(0, 40, (2, 16), generator=g) for _ in range(6)]
    return folder, script, samples


def test_opening_lazily_reads_no_weight_and_runs_like_the_float_model(files):
    folder, script, samples = files
    lazy = open_model(script, folder / "net.safetensors", entry="Net", lazy=True)
    eager = open_model(script, folder / "net.safetensors", entry="Net")
    assert lazy.lazy and not eager.lazy and lazy.keys.ok
    assert lazy.keys.summary().startswith("net.safetensors: 26 tensors matched, read from the file as they are needed")
    assert eager.keys.summary().startswith("net.safetensors: loaded 26 tensors")
    weights = lazy_weights(lazy.model)
    assert weights is not None and weights.bytes_read == 0
    assert all(p.device.type == "meta" for p in lazy.model.parameters())
    assert torch.equal(lazy.model.norm.running_mean, eager.model.norm.running_mean)  # buffers loaded
    assert torch.equal(lazy.model.pos, eager.model.pos)  # non-persistent buffers as the script builds them
    with torch.no_grad():
        assert torch.equal(lazy.model(samples[0]), eager.model(samples[0]))
    assert all(p.device.type == "meta" for p in lazy.model.parameters())  # released after the forward
    float_bytes = sum(p.numel() * 4 for p in eager.model.parameters())  # tied weight once
    assert weights.bytes_read == float_bytes + lazy.model.embed.weight.numel() * 4  # read for embed and head


INT4_G16 = QuantConfig(dtype="int4", mode="weight-only", granularity="per-group", group_size=16)
CONFIGS = {
    "int8-weight-only": QuantConfig(mode="weight-only"),
    "int8-dynamic": QuantConfig(mode="dynamic"),
    "int8-static": QuantConfig(mode="static"),
    "int4-g16": INT4_G16,
    "fp16": QuantConfig(dtype="fp16"),
    "int4-gptq": QuantConfig(
        dtype="int4", mode="weight-only", granularity="per-group", group_size=16, algorithm="gptq"
    ),
    "int8-static-bias-correction": QuantConfig(mode="static", bias_correction=True),
}


@pytest.mark.parametrize("checkpoint", ["net.safetensors", "net.safetensors.index.json"])
@pytest.mark.parametrize("name", list(CONFIGS))
def test_streaming_and_in_memory_files_are_identical(files, tmp_path, name, checkpoint):
    folder, script, samples = files
    config = CONFIGS[name]
    written = {}
    for how in ("lazy", "eager"):
        loaded = open_model(script, folder / checkpoint, entry="Net", lazy=how == "lazy")
        result = quantize(loaded.model, config, calibration=samples)
        assert result.report.load_test_passed, result.report.failures
        path = tmp_path / f"{how}.safetensors"
        save_quantized(result, path)
        written[how] = (load_file(path), read_metadata(path), result.report)
    (lazy_t, lazy_meta, lazy_report), (eager_t, eager_meta, eager_report) = written["lazy"], written["eager"]
    assert list(lazy_t) == list(eager_t)
    assert all(torch.equal(lazy_t[k], eager_t[k]) for k in lazy_t)
    assert lazy_meta["layers"] == eager_meta["layers"] and lazy_meta["aliases"] == eager_meta["aliases"]
    assert lazy_report.output_sqnr_db == eager_report.output_sqnr_db
    assert lazy_report.original_bytes == eager_report.original_bytes
    assert lazy_report.quantized_bytes == eager_report.quantized_bytes
    assert [(r.name, r.weight_sqnr_db, r.output_sqnr_db) for r in lazy_report.layers] == [
        (r.name, r.weight_sqnr_db, r.output_sqnr_db) for r in eager_report.layers
    ]


def test_lazy_model_stays_unread_and_unchanged_by_quantizing(files):
    folder, script, samples = files
    lazy = open_model(script, folder / "net.safetensors", entry="Net", lazy=True)
    result = quantize(lazy.model, QuantConfig(mode="weight-only"), calibration=samples)
    assert all(p.device.type == "meta" for p in lazy.model.parameters())
    assert lazy_weights(result.model) is None  # the result is an ordinary model
    assert all(t.device.type == "cpu" for t in result.model.state_dict().values())
    assert result.model.blocks[0][0].weight is not None and not result.model.blocks[0][0]._forward_pre_hooks


def test_a_round_trip_fault_is_caught_layer_by_layer(files, monkeypatch):
    """The lazy path's round trip (layer by layer) fails when a rebuilt layer differs."""
    from mono_quant_core import validation
    from mono_quant_core.serialization import load

    folder, script, samples = files
    real = load.replacement_class

    def broken(record, path):
        cls = real(record, path)

        class Broken(cls):  # type: ignore[misc,valid-type]
            def load_state_dict(self, state, strict=True, assign=False):
                state = {k: (v + 1 if k.endswith("weight_scale") else v) for k, v in state.items()}
                return super().load_state_dict(state, strict=strict, assign=assign)

        return Broken

    monkeypatch.setattr(load, "replacement_class", broken)
    lazy = open_model(script, folder / "net.safetensors", entry="Net", lazy=True)
    result = quantize(lazy.model, QuantConfig(mode="weight-only", on_failure="warn"), calibration=samples)
    assert result.report.load_test_passed is False
    assert validation.round_trip_by_layer(result, lazy.model) is False


def test_scripts_that_read_weights_while_building_fall_back_to_memory(files, caplog):
    folder, script, _ = files
    namespace: dict = {}
    exec(compile(SCRIPT, str(script), "exec"), namespace)
    torch.manual_seed(0)
    save_file(namespace["TouchesWeights"]().state_dict(), folder / "touches.safetensors")
    with caplog.at_level("INFO", logger="mono_quant_core"):
        loaded = open_model(script, folder / "touches.safetensors", entry="TouchesWeights", lazy=True)
    assert not loaded.lazy and lazy_weights(loaded.model) is None
    assert "loading the model in memory" in caplog.text
    assert loaded.model.fc.weight.device.type == "cpu"


def test_a_checkpoint_missing_a_parameter_falls_back_to_memory(files, caplog):
    folder, script, _ = files
    state = load_file(folder / "net.safetensors")
    state.pop("conv.bias")
    save_file(state, folder / "partial.safetensors")
    with caplog.at_level("INFO", logger="mono_quant_core"):
        loaded = open_model(script, folder / "partial.safetensors", entry="Net", strict=False, lazy=True)
    assert not loaded.lazy and "1 parameters are not in the checkpoint" in caplog.text
    assert loaded.model.conv.bias.device.type == "cpu"


DRIVER = """
import sys
sys.path.insert(0, {bench!r})
import _rss
import torch  # noqa: F401 (the baseline holds torch and mono-quant, as the CLI does)
from mono_quant_core.cli.main import main
import mono_quant_core.quantizer, mono_quant_core.serialization.save  # noqa: F401

base = _rss.rss()
_rss.reset_peak()
code = main(sys.argv[1:])
print("PEAK_OVER_BASE", _rss.peak() - base)
sys.exit(code)
"""


def test_a_1gb_checkpoint_quantizes_from_the_cli_within_045gb(tmp_path):
    """64 Linear(2048, 2048) float32 layers (1.07 GB): int8 weight-only needs the codes (0.27 GB),
    two layers' float weights at a time and a margin; the in-memory path would need > 1.3 GB."""
    script = tmp_path / "big.py"
    script.write_text(
        textwrap.dedent(
            """
            from torch import nn

            def build_model():
                return nn.Sequential(*[nn.Linear(2048, 2048) for _ in range(64)])
            """
        )
    )
    g = torch.Generator().manual_seed(0)
    state = {}
    for i in range(64):
        state[f"{i}.weight"] = torch.randn(2048, 2048, generator=g) * 0.02
        state[f"{i}.bias"] = torch.zeros(2048)
    save_file(state, tmp_path / "big.safetensors")
    float_bytes = sum(t.numel() * 4 for t in state.values())
    del state
    out = tmp_path / "big.int8.safetensors"
    args = ["quantize", "--script", str(script), "--checkpoint", str(tmp_path / "big.safetensors")]
    args += ["--mode", "weight-only", "--out", str(out)]
    run = subprocess.run(
        [sys.executable, "-c", DRIVER.format(bench=str(ROOT / "bench")), *args],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,
    )
    assert run.returncode == 0, run.stderr
    peak = int(run.stdout.split("PEAK_OVER_BASE")[-1].split()[0])
    assert float_bytes > 1.0e9
    print(f"peak RSS over baseline {peak / 1e9:.3f} GB")
    assert peak <= 0.45e9, f"peak RSS over baseline {peak / 1e9:.2f} GB"
    assert out.stat().st_size < 0.3 * float_bytes


def test_histograms_and_auto_threshold_on_a_lazy_model(files, monkeypatch):
    from mono_quant_core import layer_histograms
    from mono_quant_core.loading import model_loader

    folder, script, samples = files
    lazy = open_model(script, folder / "net.safetensors", entry="Net", lazy=True)
    eager = open_model(script, folder / "net.safetensors", entry="Net")
    q = quantize(eager.model, QuantConfig(mode="static"), calibration=samples).model
    for name in ("blocks.0.1", "conv"):
        a = layer_histograms(lazy.model, q, name, samples)
        b = layer_histograms(eager.model, q, name, samples)
        assert (a.weights.counts, a.weights.edges) == (b.weights.counts, b.weights.edges)
        assert a.activations is not None and b.activations is not None
        assert a.activations.counts == b.activations.counts
    assert all(p.device.type == "meta" for p in lazy.model.parameters())
    # "auto": lazily only from LAZY_AUTO_BYTES on.
    assert not open_model(script, folder / "net.safetensors", entry="Net", lazy="auto").lazy
    monkeypatch.setattr(model_loader, "LAZY_AUTO_BYTES", 1)
    assert open_model(script, folder / "net.safetensors", entry="Net", lazy="auto").lazy


def test_the_checkpoint_hash_is_computed_when_a_file_records_it(files, tmp_path, monkeypatch):
    """Opening a lazy model does not read the whole checkpoint for its SHA-256 (9 of the 10 s of
    opening a 13.5 GB one); the saved file still records it, the same as the in-memory path's."""
    from mono_quant_core.loading import checkpoint_files

    folder, script, samples = files
    calls: list[str] = []
    real = checkpoint_files.checkpoint_sha256
    monkeypatch.setattr(checkpoint_files, "checkpoint_sha256", lambda p: calls.append(str(p)) or real(p))
    lazy = open_model(script, folder / "net.safetensors", entry="Net", lazy=True)
    assert lazy.source["checkpoint_sha256"] is None and calls == []
    result = quantize(lazy.model, QuantConfig(mode="weight-only"), calibration=samples)
    save_quantized(result, tmp_path / "lazy.safetensors")
    eager = open_model(script, folder / "net.safetensors", entry="Net")
    recorded = read_metadata(tmp_path / "lazy.safetensors")["source"]["checkpoint_sha256"]
    assert recorded == eager.source["checkpoint_sha256"] and len(calls) == 1  # once for the result
