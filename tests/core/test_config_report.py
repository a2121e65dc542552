"""QuantConfig values and checks; the report's JSON form."""

from __future__ import annotations

import json
import math

import pytest

from mono_quant_core.config import QuantConfig
from mono_quant_core.errors import ConfigError
from mono_quant_core.report import LayerReport, QuantReport, SkippedLayer, format_db


def test_defaults_match_the_design():
    c = QuantConfig()
    assert (c.dtype, c.mode, c.scheme, c.granularity, c.observer) == (
        "int8",
        "dynamic",
        "symmetric",
        "per-channel",
        "minmax",
    )
    assert c.include_types is None


def test_underscore_and_case_spellings():
    c = QuantConfig.from_dict({"granularity": "PER_TENSOR", "mode": "weight_only", "group-size": 64})
    assert (c.granularity, c.mode, c.group_size) == ("per-tensor", "weight-only", 64)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"dtype": "int3"}, "dtype: 'int3' is not allowed; choose one of int8, int4, fp16, bf16"),
        ({"dtype": "int4", "mode": "dynamic"}, "int4 is weight-only"),
        ({"mode": "static", "granularity": "per-group"}, "per-group needs mode weight-only"),
        ({"group_size": 3}, "group_size"),
        ({"percentile": 0}, "percentile"),
    ],
)
def test_bad_values_name_the_field(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        QuantConfig(**kwargs)


def test_unknown_key_is_named():
    with pytest.raises(ConfigError, match="colour: unknown setting"):
        QuantConfig.from_dict({"colour": "red"})


def test_config_errors_carry_the_field_and_problem():
    """The field at fault is a field of the error, not text to split out of its message."""
    with pytest.raises(ConfigError) as info:
        QuantConfig(group_size=3)
    assert (info.value.key, info.value.problem) == ("group_size", "3 must be an even integer >= 2")
    assert info.value.section is None
    assert str(info.value) == "group_size: 3 must be an even integer >= 2"


def test_config_error_declares_its_fields():
    plain = ConfigError("something is wrong")
    assert (plain.section, plain.key, plain.problem) == (None, None, None)
    located = ConfigError("[calibration] seed: bad", section="calibration", key="seed", problem="bad").located("j.toml")
    assert str(located) == "j.toml: [calibration] seed: bad"
    assert (located.section, located.key, located.problem) == ("calibration", "seed", "bad")


def test_config_round_trips_through_dict():
    c = QuantConfig(dtype="int4", mode="weight-only", granularity="per-group", layers=["a.b"])
    assert QuantConfig.from_dict(c.to_dict()) == c


def test_report_json_round_trip_with_infinity():
    r = QuantReport(
        output_sqnr_db=math.inf,
        layers=[LayerReport("fc", "Linear", "int8", weight_sqnr_db=41.5)],
        skipped=[SkippedLayer("norm", "LayerNorm", "no replacement")],
    )
    text = r.to_json()
    assert json.loads(text)["output_sqnr_db"] == "inf"
    back = QuantReport.from_json(text)
    assert back == r and math.isinf(back.output_sqnr_db)


def test_format_db():
    assert format_db(math.inf) == "∞ dB"
    assert format_db(None) == "—"
    assert format_db(41.26) == "41.3 dB"


def test_public_names_are_not_shadowed_by_submodules():
    """Importing every submodule first must not turn a public function into a module."""
    import importlib
    import pkgutil
    import types

    import mono_quant_core

    for info in pkgutil.walk_packages(mono_quant_core.__path__, "mono_quant_core."):
        if ".cli" in info.name:
            continue  # the CLI's __main__ would parse sys.argv
        importlib.import_module(info.name)
    for name in mono_quant_core.__all__:
        value = getattr(mono_quant_core, name)
        assert not isinstance(value, types.ModuleType), name
    assert callable(mono_quant_core.quantize) and mono_quant_core.quantize.__name__ == "quantize"


def test_type_checkers_see_every_lazy_export():
    """The TYPE_CHECKING imports of mono_quant_core name exactly the names __getattr__ loads."""
    import ast
    import inspect

    import mono_quant_core

    tree = ast.parse(inspect.getsource(mono_quant_core))
    block = next(n for n in tree.body if isinstance(n, ast.If) and ast.unparse(n.test) == "TYPE_CHECKING")
    imported = sorted(a.asname or a.name for n in block.body if isinstance(n, ast.ImportFrom) for a in n.names)
    assert imported == sorted(mono_quant_core._EXPORTS)


def test_a_config_error_declares_the_rule_it_broke_apart_from_the_value_given():
    """The settings panel shows the rule beside an option it disables, not a message about a value
    the user never chose (issue 12, item 8: "got mode='dynamic'" while Mode read weight-only)."""
    with pytest.raises(ConfigError) as err:
        QuantConfig(dtype="int4", mode="dynamic")
    assert err.value.key == "mode"
    assert err.value.rule == "int4 is weight-only"
    assert "got mode='dynamic'" in str(err.value)  # the message still names the value given
    assert err.value.located("job.toml").rule == "int4 is weight-only"
