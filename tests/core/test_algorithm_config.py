"""The algorithm options of QuantConfig: what applies where, what a layer override does to them,
what a run needs and records."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from mono_quant_core import QuantConfig, quantize
from mono_quant_core.config import algorithm_problem, needs_samples
from mono_quant_core.errors import ConfigError

INT4_G = {"dtype": "int4", "mode": "weight-only", "granularity": "per-group", "group_size": 32}


@pytest.mark.parametrize(
    ("option", "settings", "applies"),
    [
        ("gptq", ("int4", "weight-only", "per-group"), True),
        ("gptq", ("int8", "weight-only", "per-channel"), True),
        ("gptq", ("int8", "dynamic", "per-channel"), False),
        ("gptq", ("int8", "weight-only", "per-tensor"), False),
        ("gptq", ("fp16", "weight-only", "per-channel"), False),
        ("hqq", ("int4", "weight-only", "per-group"), True),
        ("hqq", ("bf16", "weight-only", "per-channel"), False),
        ("smoothquant", ("int8", "static", "per-channel"), True),
        ("smoothquant", ("int8", "dynamic", "per-channel"), True),
        ("smoothquant", ("int8", "weight-only", "per-channel"), False),
        ("smoothquant", ("int4", "weight-only", "per-group"), False),
        ("bias_correction", ("int8", "static", "per-channel"), True),
        ("bias_correction", ("int4", "weight-only", "per-group"), True),
        ("bias_correction", ("int8", "dynamic", "per-channel"), False),
    ],
)
def test_algorithm_problem_says_where_each_option_applies(option, settings, applies):
    problem = algorithm_problem(option, *settings)
    assert (problem is None) == applies
    if not applies:
        assert isinstance(problem, str) and len(problem) > 10  # a reason a user can read


def test_a_config_that_does_not_fit_its_algorithm_is_refused_with_the_key():
    with pytest.raises(ConfigError) as info:
        QuantConfig(dtype="int8", mode="dynamic", algorithm="gptq")
    assert info.value.key == "algorithm" and "weight-only" in str(info.value)
    with pytest.raises(ConfigError) as info:
        QuantConfig(dtype="int8", mode="weight-only", smoothquant_alpha=0.5)
    assert info.value.key == "smoothquant_alpha"
    for bad in (0.0, 1.5, True, "0.5"):
        with pytest.raises(ConfigError):
            QuantConfig(dtype="int8", mode="static", smoothquant_alpha=bad)
    with pytest.raises(ConfigError) as info:
        QuantConfig(**INT4_G, algorithm="gptq", gptq_damp=0)
    assert info.value.key == "gptq_damp"
    with pytest.raises(ConfigError):
        QuantConfig(algorithm="awq")


def test_a_layer_set_to_another_dtype_falls_back_to_round_to_nearest():
    config = QuantConfig(**INT4_G, algorithm="gptq", bias_correction=True, layer_overrides={"head": {"dtype": "fp16"}})
    head = config.layer_config("head")
    assert head is not None and head.algorithm == "rtn" and head.bias_correction is False
    body = config.layer_config("body")
    assert body is not None and body.algorithm == "gptq" and body.bias_correction is True


def test_what_needs_samples_and_what_is_recorded():
    assert needs_samples(QuantConfig(**INT4_G, algorithm="gptq"))
    assert not needs_samples(QuantConfig(**INT4_G, algorithm="hqq"))
    assert needs_samples(QuantConfig(dtype="int8", mode="dynamic", smoothquant_alpha=0.5))
    assert needs_samples(QuantConfig(dtype="int8", mode="weight-only", bias_correction=True))
    assert QuantConfig(**INT4_G, algorithm="gptq", gptq_act_order=True).algorithm_settings() == {
        "algorithm": "gptq",
        "gptq_act_order": True,
    }
    back = QuantConfig.from_dict(QuantConfig(**INT4_G, algorithm="hqq", hqq_iterations=5).to_dict())
    assert back.algorithm == "hqq" and back.hqq_iterations == 5


def test_gptq_without_samples_says_so_before_any_work():
    model = nn.Sequential(nn.Linear(64, 64)).eval()
    with pytest.raises(ConfigError, match="algorithm gptq: needs calibration samples"):
        quantize(model, QuantConfig(**INT4_G, algorithm="gptq"), calibration=None)


def test_smoothquant_with_a_target_is_refused():
    model = nn.Sequential(nn.Linear(64, 64)).eval()
    config = QuantConfig(dtype="int8", mode="static", smoothquant_alpha=0.5, target_output_sqnr_db=30.0)
    with pytest.raises(ConfigError) as info:
        quantize(model, config, calibration=[torch.randn(2, 64) for _ in range(10)])
    assert info.value.key == "smoothquant_alpha"
