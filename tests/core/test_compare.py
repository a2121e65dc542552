"""compare_reports: two real runs of one model (int8 dynamic, int4 weight-only) side by side."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest
import torch
from zoo import make

from mono_quant_core import QuantConfig, QuantReport, compare_reports, quantize, save_quantized
from mono_quant_core.compare import db_delta
from mono_quant_core.report import LayerReport


def mean_output(model) -> float:
    """A task metric: the mean of the model's outputs on a fixed batch."""
    x = torch.randn(16, 64, generator=torch.Generator().manual_seed(3))
    return float(model(x).mean())


@pytest.fixture(scope="module")
def runs():
    model, samples = make("mlp")
    a = quantize(model, QuantConfig(dtype="int8", mode="dynamic"), calibration=samples, metric=mean_output)
    b = quantize(
        model,
        QuantConfig(dtype="int4", mode="weight-only", granularity="per-group", group_size=32),
        calibration=samples,
        metric=mean_output,
    )
    return a, b


def test_config_diff_lists_only_the_differing_keys_in_order(runs):
    a, b = runs
    diff = compare_reports(a.report, b.report).config_diff
    assert diff == [
        ("dtype", "int8", "int4"),
        ("mode", "dynamic", "weight-only"),
        ("granularity", "per-channel", "per-group"),
        ("group_size", 128, 32),
    ]
    assert compare_reports(a.report, a.report).config_diff == []


def test_layers_and_their_deltas_are_the_reports(runs):
    a, b = runs
    c = compare_reports(a.report, b.report)
    assert [d.name for d in c.layers] == ["net.0", "net.2", "net.4"]
    for delta, la, lb in zip(c.layers, a.report.layers, b.report.layers, strict=True):
        assert (delta.type, delta.dtype_a, delta.dtype_b) == ("Linear", "int8", "int4")
        assert (delta.weight_sqnr_a_db, delta.weight_sqnr_b_db) == (la.weight_sqnr_db, lb.weight_sqnr_db)
        assert (delta.output_sqnr_a_db, delta.output_sqnr_b_db) == (la.output_sqnr_db, lb.output_sqnr_db)
        assert delta.delta_output_db == lb.output_sqnr_db - la.output_sqnr_db
        assert delta.delta_output_db < 0  # int4 is noisier
        assert delta.in_a and delta.in_b


def test_output_size_and_metric_deltas(runs, tmp_path):
    a, b = runs
    ra, rb = a.report, b.report
    c = compare_reports(ra, rb)
    assert c.output_sqnr_delta_db == rb.output_sqnr_db - ra.output_sqnr_db
    assert c.size_delta_bytes == rb.quantized_bytes - ra.quantized_bytes < 0
    assert c.file_size_delta_bytes is None  # neither was saved
    m = "mean_output"
    assert c.metric_deltas == {
        m: (
            ra.metrics[m]["quantized"],
            rb.metrics[m]["quantized"],
            rb.metrics[m]["quantized"] - ra.metrics[m]["quantized"],
        )
    }
    assert c.metric_higher_is_better == {m: True}
    size_a = save_quantized(a, tmp_path / "a.safetensors")
    size_b = save_quantized(b, tmp_path / "b.safetensors")
    c = compare_reports(ra, rb)
    assert (c.file_bytes_a, c.file_bytes_b, c.file_size_delta_bytes) == (size_a, size_b, size_b - size_a)


def test_to_dict_is_json(runs):
    a, b = runs
    data = json.loads(json.dumps(compare_reports(a.report, b.report).to_dict(), allow_nan=False))
    assert data["config_diff"][0] == {"key": "dtype", "a": "int8", "b": "int4"}
    assert [layer["name"] for layer in data["layers"]] == ["net.0", "net.2", "net.4"]


def report(*layers: LayerReport, **config) -> QuantReport:
    return QuantReport(layers=list(layers), config=config)


def test_union_of_layers_a_order_then_b_extras():
    a = report(LayerReport("x", "Linear", "int8", output_sqnr_db=30.0), LayerReport("y", "Conv2d", "int8"))
    b = report(LayerReport("z", "Linear", "int4", output_sqnr_db=20.0), LayerReport("x", "Linear", "int4"))
    c = compare_reports(a, b)
    assert [(d.name, d.in_a, d.in_b) for d in c.layers] == [("x", True, True), ("y", True, False), ("z", False, True)]
    assert c.layer("x").delta_output_db is None  # not measured in B
    assert (c.layer("y").dtype_b, c.layer("z").dtype_a, c.layer("z").type) == (None, None, "Linear")


def test_nested_config_values_compare_by_value_and_missing_keys_read_none():
    a = report(layer_overrides={"fc": {"dtype": "float"}}, layers=["fc", "out"])
    b = report(layer_overrides={"fc": {"dtype": "float"}}, layers=["fc", "out"], extra=1)
    assert compare_reports(a, b).config_diff == [("extra", None, 1)]
    b.config["layer_overrides"] = {"fc": {"dtype": "int8"}}
    assert compare_reports(a, b).config_diff[0] == (
        "layer_overrides",
        {"fc": {"dtype": "float"}},
        {"fc": {"dtype": "int8"}},
    )


def test_infinite_sqnr_deltas():
    inf = math.inf
    assert db_delta(inf, inf) == 0.0  # identical in both runs: no change, not inf − inf = nan
    assert db_delta(30.0, inf) == inf and db_delta(inf, 30.0) == -inf
    assert db_delta(None, 3.0) is None and db_delta(3.0, None) is None
    assert db_delta(30.0, 42.5) == 12.5


def test_compare_does_not_import_torch():
    code = "import sys, mono_quant_core.compare\nassert 'torch' not in sys.modules\nprint('ok')\n"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr
