"""fold_batchnorm: Conv→BatchNorm pairs folded into the convolution before quantization (mono_quant_core.folding).

Folding is exact in float (the folded model's outputs equal the unfolded model's within float32
rounding), never touches the caller's model, refuses BatchNorms that read anything but a
convolution's sole output, and the saved file reloads into the user's unfolded architecture
bit-exactly.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch
from torch import nn

from mono_quant_core import QuantConfig, load_quantized, quantize, save_quantized
from mono_quant_core.cli.main import build_parser
from mono_quant_core.cli.quant_flags import config_from_args
from mono_quant_core.errors import ConfigError
from mono_quant_core.folding import FoldedBatchNorm, fold_batchnorm
from mono_quant_core.jobs.job import Job
from mono_quant_core.jobs.job_reader import parse_job
from mono_quant_core.serialization.read import read_file

#: Folding changes the float outputs by float32 rounding only: max |diff| / max |output|.
FLOAT_REL_TOL = 1e-5
#: Per-channel weight scales absorb the BatchNorm's per-channel factor, so folding costs no
#: accuracy: the folded model's output SQNR is the unfolded one's within this (dB).
SQNR_SLACK_DB = 0.1
#: And both are int8-accurate on this small CNN.
MIN_SQNR_DB = 35.0


def _batchnorm(cls: type[nn.Module], channels: int, g: torch.Generator) -> nn.Module:
    """A BatchNorm with running statistics far from (0, 1), so that folding changes the weights a lot."""
    bn = cls(channels)
    with torch.no_grad():
        bn.running_mean.copy_(torch.rand(channels, generator=g) * 4 - 2)
        bn.running_var.copy_(torch.rand(channels, generator=g) * 4 + 0.05)
        bn.weight.copy_(torch.rand(channels, generator=g) * 3 - 1.5)  # negative factors too
        bn.bias.copy_(torch.rand(channels, generator=g) * 2 - 1)
    return bn


class ConvBnNet(nn.Module):
    """Conv2d→BN→ReLU twice (the second conv has no bias), then a Linear head: two foldable pairs."""

    def __init__(self) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.c1 = nn.Conv2d(3, 16, 3, padding=1)
        self.b1 = _batchnorm(nn.BatchNorm2d, 16, g)
        self.c2 = nn.Conv2d(16, 32, 3, padding=1, bias=False)
        self.b2 = _batchnorm(nn.BatchNorm2d, 32, g)
        self.head = nn.Linear(32, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.b1(self.c1(x)))
        x = torch.relu(self.b2(self.c2(x)))
        return self.head(x.mean((2, 3)))


class Untraceable(nn.Module):
    """Data-dependent control flow (no fx trace): pairs come from the nn.Sequential's adjacency."""

    def __init__(self) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(1)
        self.body = nn.Sequential(nn.Conv1d(2, 8, 3), _batchnorm(nn.BatchNorm1d, 8, g), nn.ReLU())
        self.tail = nn.Sequential(nn.ReLU(), _batchnorm(nn.BatchNorm1d, 8, g))  # after a ReLU: not folded

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.body(x)
        if float(y.sum()) > 0:  # fx cannot trace a branch on a value
            y = y * 2
        return self.tail(y)


class NotFoldable(nn.Module):
    """Three BatchNorms that must stay: after a ReLU, on a conv output also used elsewhere, and
    without running statistics."""

    def __init__(self) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(2)
        self.c1 = nn.Conv2d(3, 8, 3, padding=1)
        self.after_relu = _batchnorm(nn.BatchNorm2d, 8, g)
        self.c2 = nn.Conv2d(8, 8, 3, padding=1)
        self.shared_output = _batchnorm(nn.BatchNorm2d, 8, g)
        self.c3 = nn.Conv2d(8, 8, 3, padding=1)
        self.batch_stats = nn.BatchNorm2d(8, track_running_stats=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.after_relu(torch.relu(self.c1(x)))
        y = self.c2(x)
        x = self.shared_output(y) + y  # the conv's output is read twice
        return self.batch_stats(self.c3(x))


def _images(n: int = 20, seed: int = 3) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(4, 3, 12, 12, generator=g) for _ in range(n)]


def _max_rel_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / a.abs().max())


def test_folded_float_model_computes_the_same() -> None:
    model = ConvBnNet().eval()
    result = fold_batchnorm(model)
    assert result.folded == [("c1", "b1"), ("c2", "b2")]
    assert result.not_folded == {}
    assert isinstance(result.model.b1, FoldedBatchNorm) and isinstance(result.model.b2, FoldedBatchNorm)
    assert result.model.c2.bias is not None  # folding gave the bias-free conv a bias
    x = torch.cat(_images(4))
    with torch.no_grad():
        assert _max_rel_diff(model(x), result.model(x)) <= FLOAT_REL_TOL


def test_folding_never_changes_the_users_model() -> None:
    model = ConvBnNet().eval()
    before = copy.deepcopy(model.state_dict())
    types = [type(m) for m in model.modules()]
    fold_batchnorm(model)
    quantize(model, QuantConfig(mode="static", fold_batchnorm=True), _images(), validate=False)
    assert [type(m) for m in model.modules()] == types
    after = model.state_dict()
    assert list(after) == list(before) and all(torch.equal(before[k], after[k]) for k in before)
    assert model.c2.bias is None


def test_untraceable_model_folds_adjacent_sequential_children() -> None:
    model = Untraceable().eval()
    result = fold_batchnorm(model)
    assert result.folded == [("body.0", "body.1")]
    assert "does not follow a convolution" in result.not_folded["tail.1"]
    x = torch.randn(4, 2, 30, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        assert _max_rel_diff(model(x), result.model(x)) <= FLOAT_REL_TOL


def test_batchnorms_that_do_not_read_only_a_conv_output_stay() -> None:
    model = NotFoldable().eval()
    result = fold_batchnorm(model)
    assert result.folded == []
    assert result.model is model  # nothing folded: no copy
    assert "relu" in result.not_folded["after_relu"]
    assert "also used elsewhere" in result.not_folded["shared_output"]
    assert "running statistics" in result.not_folded["batch_stats"]
    quantized = quantize(model, QuantConfig(fold_batchnorm=True), _images(4), validate=False).model
    assert [n for n, m in quantized.named_modules() if isinstance(m, nn.BatchNorm2d)] == [
        "after_relu",
        "shared_output",
        "batch_stats",
    ]


@pytest.mark.parametrize("mode", ["weight-only", "dynamic", "static"])
def test_quantized_with_folding_is_as_accurate(mode: str) -> None:
    model = ConvBnNet().eval()
    samples = _images()
    plain = quantize(model, QuantConfig(mode=mode), samples).report
    folded = quantize(model, QuantConfig(mode=mode, fold_batchnorm=True), samples).report
    assert plain.output_sqnr_db is not None and folded.output_sqnr_db is not None
    print(f"{mode}: output SQNR {plain.output_sqnr_db:.2f} dB unfolded, {folded.output_sqnr_db:.2f} dB folded")
    assert folded.output_sqnr_db >= plain.output_sqnr_db - SQNR_SLACK_DB
    assert folded.output_sqnr_db >= MIN_SQNR_DB
    assert folded.passed and folded.config["fold_batchnorm"] is True
    assert [(f["name"], f["into"]) for f in folded.folded_batchnorm] == [("b1", "c1"), ("b2", "c2")]
    assert plain.folded_batchnorm == []


@pytest.mark.parametrize("suffix", [".safetensors", ".pt"])
def test_save_and_load_into_the_unfolded_architecture_bit_exactly(tmp_path: Path, suffix: str) -> None:
    model = ConvBnNet().eval()
    result = quantize(model, QuantConfig(mode="static", fold_batchnorm=True), _images())
    assert result.report.passed, result.report.failures
    path = tmp_path / f"m{suffix}"
    save_quantized(result, path)
    meta = read_file(str(path))[0]
    assert meta["folded_batchnorm"] == [
        {"name": "b1", "type": "BatchNorm2d", "into": "c1"},
        {"name": "b2", "type": "BatchNorm2d", "into": "c2"},
    ]
    assert meta["config"]["fold_batchnorm"] is True
    loaded = load_quantized(path, model=model)  # the user's model still has its BatchNorms
    assert isinstance(loaded.b1, FoldedBatchNorm) and isinstance(model.b1, nn.BatchNorm2d)
    x = torch.cat(_images(3, seed=9))
    with torch.no_grad():
        assert torch.equal(loaded(x), result.model(x))


def test_unfolded_files_record_no_folding(tmp_path: Path) -> None:
    result = quantize(ConvBnNet().eval(), QuantConfig(), _images(2), validate=False)
    save_quantized(result, tmp_path / "m.safetensors")
    assert "folded_batchnorm" not in read_file(str(tmp_path / "m.safetensors"))[0]
    assert isinstance(result.model.b1, nn.BatchNorm2d)


def test_config_cli_and_job_file_set_it(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="fold_batchnorm"):
        QuantConfig(fold_batchnorm="yes")  # type: ignore[arg-type]
    assert QuantConfig.from_dict({"fold-batchnorm": True}).fold_batchnorm is True
    text = '[model]\nscript = "m.py"\n[quantization]\nfold_batchnorm = true\n[output]\npath = "out.safetensors"\n'
    assert parse_job(text, tmp_path).config.fold_batchnorm is True
    with pytest.raises(ConfigError, match="fold_batchnorm"):
        parse_job(text.replace("= true", '= "yes"'), tmp_path)
    job = Job(script="m.py", config=QuantConfig(fold_batchnorm=True), output="o.safetensors")
    assert "fold_batchnorm = true" in job.to_toml()
    assert Job.from_toml(job.to_toml()).config.fold_batchnorm is True
    args = build_parser().parse_args(["quantize", "--script", "m.py", "--out", "o.safetensors", "--fold-batchnorm"])
    assert config_from_args(args).fold_batchnorm is True
    args = build_parser().parse_args(["quantize", "--script", "m.py", "--out", "o.safetensors"])
    assert config_from_args(args).fold_batchnorm is False
    assert json.loads(json.dumps(QuantConfig(fold_batchnorm=True).to_dict()))["fold_batchnorm"] is True
    # sensitivity measures the model quantize writes: it takes the flag too
    args = build_parser().parse_args(["sensitivity", "--script", "m.py", "--calib", "c", "--fold-batchnorm"])
    assert config_from_args(args).fold_batchnorm is True


def test_sensitivity_measures_the_folded_model_when_asked() -> None:
    """analyze_sensitivity with fold_batchnorm describes the model quantize writes: the same
    figures as on the model folded beforehand (it measured the unfolded model before)."""
    from mono_quant_core import analyze_sensitivity

    model = ConvBnNet().eval()
    samples = _images(10)
    config = QuantConfig(mode="static", granularity="per-tensor")
    asked = analyze_sensitivity(model, config.replace(fold_batchnorm=True), samples)
    prefolded = analyze_sensitivity(fold_batchnorm(model).model, config, samples)
    unfolded = analyze_sensitivity(model, config, samples)
    figures = [(r.name, r.output_sqnr_db) for r in asked.layers]
    assert figures == [(r.name, r.output_sqnr_db) for r in prefolded.layers if r.name in dict(figures)]
    assert figures != [(r.name, r.output_sqnr_db) for r in unfolded.layers if r.name in dict(figures)]


LAZY_CNN = """
from torch import nn


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.head = nn.Linear(8, 4)

    def forward(self, x):
        return self.head(self.bn(self.conv(x)).mean((2, 3)))
"""


def test_a_lazily_opened_model_is_folded_too(tmp_path: Path) -> None:
    """Folding rewrites the convolutions' weights: a model opened without its weights is read
    into memory first (as for SmoothQuant) instead of silently not folding."""
    from safetensors.torch import save_file

    from mono_quant_core import open_model

    script = tmp_path / "net.py"
    script.write_text(LAZY_CNN)
    namespace: dict = {}
    exec(compile(LAZY_CNN, str(script), "exec"), namespace)
    torch.manual_seed(0)
    model = namespace["Net"]().eval()
    model.bn.running_mean.normal_()
    model.bn.running_var.uniform_(0.5, 2.0)
    save_file(model.state_dict(), tmp_path / "net.safetensors")
    states = {}
    for lazy in (True, False):
        loaded = open_model(script, tmp_path / "net.safetensors", entry="Net", lazy=lazy)
        result = quantize(loaded.model, QuantConfig(mode="static", fold_batchnorm=True), _images(6))
        assert [(f["name"], f["into"]) for f in result.report.folded_batchnorm] == [("bn", "conv")]
        states[lazy] = result.model.state_dict()
    assert all(torch.equal(v, states[False][k]) for k, v in states[True].items() if isinstance(v, torch.Tensor))
