"""Sensitivity, layer overrides (mixed precision) and the automatic fallback to a target."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from torch import nn

from mono_quant_core import (
    Cancelled,
    CancelToken,
    ConfigError,
    QuantConfig,
    SensitivityReport,
    analyze_sensitivity,
    load_quantized,
    quantize,
    read_metadata,
    save_quantized,
)
from mono_quant_core.modules.base import QuantizedModule
from mono_quant_core.structure import get_submodule

PLANTED = "2"


def planted_model() -> nn.Sequential:
    """Four Linear layers; layer 2 has large weights on inputs that are always 0 after the ReLU.

    The float model never sees those weights (their inputs are dead), but they set layer 2's
    quantization scales, so quantized its real weights round to zero: one planted sensitive layer.
    """
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 8)
    ).eval()
    with torch.no_grad():
        model[0].bias[:4] = -1000.0  # these four outputs are 0 after the ReLU for any input
        model[2].weight[:, :4] = 50.0  # outliers on the dead inputs
    return model


def samples(n: int = 20) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return [torch.randn(8, 32, generator=g) for _ in range(n)]


INT8 = QuantConfig(dtype="int8", mode="weight-only")


def test_sensitivity_ranks_the_planted_layer_first():
    model, data = planted_model(), samples()
    report = analyze_sensitivity(model, INT8, data)
    assert report.ranking()[0] == PLANTED
    assert [layer.rank for layer in report.layers] == [1, 2, 3, 4]
    planted = report.layer(PLANTED)
    others = [layer for layer in report.layers if layer.name != PLANTED]
    # Measured: planted 13 dB alone, the others 58 dB.
    assert planted.output_sqnr_db < 20.0
    assert all(layer.output_sqnr_db > 50.0 for layer in others)
    assert sorted(layer.output_sqnr_db for layer in report.layers) == [layer.output_sqnr_db for layer in report.layers]
    # Its weights look fine (the outliers carry their energy); what it does to the output does not.
    assert planted.weight_sqnr_db > planted.output_sqnr_db + 20.0
    # The all-quantized figure is quantize()'s own output SQNR on the same samples (all 20 validated).
    same = INT8.replace(validation_samples=len(data))
    assert report.all_quantized_output_sqnr_db == pytest.approx(quantize(model, same, data).report.output_sqnr_db)


def test_sensitivity_report_round_trips_through_json():
    report = analyze_sensitivity(planted_model(), INT8, samples())
    again = SensitivityReport.from_dict(json.loads(report.to_json()))
    assert again == report


def test_sensitivity_leaves_the_model_alone_and_costs_one_pass_per_layer():
    model, data = planted_model(), samples()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    calls = []
    model.register_forward_hook(lambda m, a, o: calls.append(1))
    report = analyze_sensitivity(model, INT8, data)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert not any(isinstance(m, QuantizedModule) for m in model.modules())
    # Every forward of the analysis runs the model's clone, whose hooks are the model's own copies:
    # reference pass + one pass per layer + the all-quantized pass, each over the 20 samples.
    assert len(calls) == (1 + len(report.layers) + 1) * 20


def test_sensitivity_with_a_metric_ranks_by_the_metric_drop():
    model, data = planted_model(), samples()
    probe = torch.randn(64, 32, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        labels = model(probe).argmax(1)

    def agreement(m: nn.Module) -> float:
        return float((m(probe).argmax(1) == labels).float().mean())

    report = analyze_sensitivity(model, INT8, data, metric=agreement)
    assert report.metric_name == "agreement" and report.float_metric == 1.0
    assert report.ranking()[0] == PLANTED
    assert report.layer(PLANTED).metric_drop > 0.2  # measured ~0.8
    assert all(layer.metric_drop == 1.0 - layer.metric for layer in report.layers)


def test_sensitivity_progress_per_layer_and_cancel_within_a_layer():
    model, data = planted_model(), samples()
    seen = []
    analyze_sensitivity(model, INT8, data, progress=lambda d, t, m: seen.append((d, t, m)))
    totals = {t for _, t, _ in seen}
    assert totals == {4 + 5}  # 4 layers quantized, then the float pass and 4 layers measured
    assert [d for d, _, _ in seen] == list(range(1, 10))
    assert seen[-1][2] == "measured 6"

    token = CancelToken()
    forwards = []

    def hook(*_):
        forwards.append(1)
        if len(forwards) == 20 + 3:  # the third sample of the first layer's pass
            token.cancel()

    model.register_forward_hook(hook)
    with pytest.raises(Cancelled):
        analyze_sensitivity(model, INT8, data, cancel=token)
    assert len(forwards) == 23  # stopped within the layer, at the next sample


def test_fallback_keeps_exactly_the_planted_layer_float():
    model, data = planted_model(), samples()
    plain = quantize(model, INT8, data).report.output_sqnr_db
    target = 40.0
    assert plain < target  # measured 13 dB
    result = quantize(model, INT8.replace(target_output_sqnr_db=target), data)
    report = result.report
    assert [k["name"] for k in report.kept_for_accuracy] == [PLANTED]
    assert report.kept_for_accuracy[0]["from"] == "int8" and report.kept_for_accuracy[0]["to"] == "float"
    assert "rank 1 of 4" in report.kept_for_accuracy[0]["reason"]
    assert report.output_sqnr_db >= target
    assert report.accuracy_target["reached"] is True
    assert not isinstance(get_submodule(result.model, PLANTED), QuantizedModule)
    assert {layer.name for layer in report.layers} == {"0", "4", "6"}
    assert report.config["target_output_sqnr_db"] == target  # the user's config, target included
    assert not any("target not reached" in w for w in report.warnings)


def test_an_unreachable_target_returns_the_best_result_with_a_warning(tmp_path):
    model, data = planted_model(), samples()
    result = quantize(model, INT8.replace(target_output_sqnr_db=500.0), data)
    report = result.report
    assert report.accuracy_target["reached"] is False
    warning = next(w for w in report.warnings if w.startswith("target not reached"))
    assert "of the target 500 dB" in warning and "3 of 4 layers" in warning
    # The closest configuration: three layers float, the least sensitive one still quantized.
    assert len(report.layers) == 1 and report.layers[0].output_sqnr_db is not None
    assert report.output_sqnr_db > 40.0
    path = tmp_path / "best.safetensors"
    save_quantized(result, path)
    assert len(read_metadata(path)["layers"]) == 1


def test_fallback_climbs_the_ladder_before_going_float():
    torch.manual_seed(3)
    model = nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 8)).eval()
    data = samples()
    int4 = QuantConfig(dtype="int4", mode="weight-only", granularity="per-group", group_size=32)
    all_int4 = quantize(model, int4, data).report.output_sqnr_db
    all_int8 = quantize(model, int4.replace(layer_overrides={"*": {"dtype": "int8"}}), data).report.output_sqnr_db
    assert all_int8 > all_int4 + 20.0  # measured 47.1 and 21.8 dB
    target = all_int4 + 3.0  # one layer widened is not enough (the three cost alike), all three are too many
    result = quantize(model, int4.replace(target_output_sqnr_db=target, fallback="int8"), data)
    kept = result.report.kept_for_accuracy
    assert kept and all(k["to"] == "int8" for k in kept)  # widened, none float
    assert result.report.output_sqnr_db >= target
    assert {layer.dtype for layer in result.report.layers} == {"int4", "int8"}
    assert len(result.report.layers) == 3


def test_target_metric_drop_needs_a_metric():
    with pytest.raises(ConfigError, match="target_metric_drop needs a task metric"):
        quantize(planted_model(), INT8.replace(target_metric_drop=0.01), samples())


def test_fallback_to_a_metric_drop():
    model, data = planted_model(), samples()
    probe = torch.randn(128, 32, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        labels = model(probe).argmax(1)

    def agreement(m: nn.Module) -> float:
        return float((m(probe).argmax(1) == labels).float().mean())

    result = quantize(model, INT8.replace(target_metric_drop=0.02), data, metric=agreement)
    entry = result.report.metrics["agreement"]
    assert entry["float"] == 1.0
    assert entry["float"] - entry["quantized"] <= 0.02
    assert entry["delta"] == entry["quantized"] - entry["float"]
    assert PLANTED in [k["name"] for k in result.report.kept_for_accuracy]
    assert result.report.accuracy_target["achieved_metric_drop"] <= 0.02


# -- layer overrides (mixed precision) ---------------------------------------------------------------
def test_an_exact_name_beats_a_glob_and_a_later_glob_an_earlier_one():
    config = QuantConfig(
        layer_overrides={"*": {"dtype": "int4"}, "features.*": {"dtype": "fp16"}, "features.0": {"dtype": "int8"}}
    )
    assert config.layer_config("classifier.1").dtype == "int4"
    assert config.layer_config("classifier.1").mode == "weight-only"  # int4 alone means weight-only
    assert config.layer_config("features.3").dtype == "fp16"
    assert config.layer_config("features.0").dtype == "int8"
    assert QuantConfig(layer_overrides={"head": {"dtype": "float"}}).layer_config("head.fc") is None
    reordered = QuantConfig(layer_overrides={"features.0": {"dtype": "int8"}, "*": {"dtype": "int4"}})
    assert reordered.layer_config("features.0").dtype == "int8"  # an exact name wins wherever it stands


@pytest.mark.parametrize(
    "overrides,problem",
    [
        ({"a": {"dtype": "int9"}}, "dtype 'int9' is not allowed"),
        ({"a": {"observer": "minmax"}}, "'observer' cannot be set per layer"),
        ({"a": {}}, "must be a non-empty table"),
        ({"re:(": {"dtype": "int8"}}, "not a valid regular expression"),
        ({"a": {"dtype": "int8", "granularity": "per-group", "mode": "dynamic"}}, "per-group needs mode weight-only"),
    ],
)
def test_bad_overrides_name_the_pattern(overrides, problem):
    with pytest.raises(ConfigError, match="layer_overrides") as info:
        QuantConfig(layer_overrides=overrides)
    assert problem in str(info.value)


def test_a_mixed_int4_int8_float_model_reloads_bit_exactly(tmp_path):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 8)).eval()
    config = QuantConfig(
        dtype="int8",
        mode="weight-only",
        layer_overrides={"0": {"dtype": "int4", "granularity": "per-group", "group_size": 16}, "4": {"dtype": "float"}},
    )
    result = quantize(model, config, samples())
    assert [(layer.name, layer.dtype) for layer in result.report.layers] == [("0", "int4"), ("2", "int8")]
    assert result.report.layers[0].group_size == 16
    assert any(s.name == "4" and s.reason == "kept float by layer_overrides" for s in result.report.skipped)
    for suffix in (".safetensors", ".pt"):
        path = tmp_path / f"mixed{suffix}"
        save_quantized(result, path)
        meta = read_metadata(path)
        assert [(r["name"], r["dtype"], r["group_size"]) for r in meta["layers"]] == [
            ("0", "int4", 16),
            ("2", "int8", None),
        ]
        assert meta["config"]["layer_overrides"] == config.layer_overrides
        loaded = load_quantized(path, model=planted_like(model))
        original = result.model.state_dict()
        assert list(loaded.state_dict()) == list(original)
        assert all(torch.equal(loaded.state_dict()[k], v) for k, v in original.items())
        x = torch.randn(4, 32)
        with torch.no_grad():
            assert torch.equal(loaded(x), result.model(x))


def planted_like(model: nn.Module) -> nn.Module:
    torch.manual_seed(99)  # other weights: the file's must replace them all
    return nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 8)).eval()


def test_static_mode_calibrates_only_the_layers_that_are_static():
    model, data = planted_model(), samples()
    config = QuantConfig(
        dtype="int8", mode="static", layer_overrides={"6": {"mode": "weight-only"}, "0": {"dtype": "float"}}
    )
    result = quantize(model, config, data)
    modes = {layer.name: layer.mode for layer in result.report.layers}
    assert modes == {"2": "static", "4": "static", "6": "weight-only"}
    meta_modes = {n: get_submodule(result.model, n).quant_meta()["mode"] for n in ("2", "4", "6")}
    assert meta_modes == modes
    assert math.isfinite(result.report.output_sqnr_db)


# -- the CNN demo's own task metric ------------------------------------------------------------------
DEMO = Path(__file__).resolve().parents[2] / "resources" / "demo" / "cnn"


@pytest.fixture(scope="module")
def cnn_demo():
    from mono_quant_core import load_calibration, load_metric, load_model

    model = load_model(DEMO / "model.py", DEMO / "model.safetensors")
    return model, load_calibration(DEMO / "calibration"), load_metric(DEMO / "model.py")


def test_the_cnn_demo_reports_its_top1_before_and_after(cnn_demo):
    model, calibration, metric = cnn_demo
    report = quantize(model, QuantConfig(dtype="int8", mode="static"), calibration, metric=metric).report
    entry = report.metrics["evaluate"]
    assert entry["float"] == pytest.approx(491 / 497)  # 491 of the 497 held-out digits
    assert entry["quantized"] >= entry["float"] - 2 / 497
    assert entry["delta"] == entry["quantized"] - entry["float"]
    assert entry["higher_is_better"] is True


def test_target_metric_drop_on_the_cnn_demo_keeps_the_drop_within_it(cnn_demo):
    model, calibration, metric = cnn_demo
    coarse = QuantConfig(dtype="int4", mode="weight-only", granularity="per-tensor", scheme="asymmetric")
    plain = quantize(model, coarse, calibration, metric=metric).report.metrics["evaluate"]
    assert plain["float"] - plain["quantized"] > 0  # measured: 2 of 497 digits lost
    result = quantize(model, coarse.replace(target_metric_drop=0.0), calibration, metric=metric)
    entry = result.report.metrics["evaluate"]
    assert entry["float"] - entry["quantized"] <= 0.0
    kept = result.report.kept_for_accuracy
    assert 1 <= len(kept) < 5  # measured: features.0 and classifier.4
    assert len(result.report.layers) == 5 - len(kept)
    assert result.report.accuracy_target["reached"] is True
