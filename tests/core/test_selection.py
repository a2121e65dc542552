"""Layer selection: types, names, globs, regexes, explicit names, nesting, reasons."""

from __future__ import annotations

import pytest
from torch import nn

from mono_quant_core.config import QuantConfig
from mono_quant_core.errors import ConfigError
from mono_quant_core.selection import module_table, select_layers


class Custom(nn.Module):
    def __init__(self):
        super().__init__()
        self.stack = nn.ModuleList([nn.Sequential(nn.Linear(4, 4), nn.Conv1d(4, 4, 1)) for _ in range(2)])
        self.norm = nn.LayerNorm(4)
        self.attn = nn.MultiheadAttention(4, 1)
        self.head = nn.Linear(4, 2)


def chosen(**kw):
    return select_layers(Custom(), QuantConfig(**kw)).chosen


def reasons(**kw):
    return {s.name: s.reason for s in select_layers(Custom(), QuantConfig(**kw)).skipped}


def test_default_chooses_every_supported_layer_at_any_depth():
    assert chosen() == ["stack.0.0", "stack.0.1", "stack.1.0", "stack.1.1", "head"]


def test_unsupported_layers_are_skipped_with_reasons():
    r = reasons()
    assert "no quantized replacement" in r["norm"]
    assert "MultiheadAttention" in r["attn"]
    assert "read directly by the parent MultiheadAttention" in r["attn.out_proj"]


def test_include_and_exclude_types():
    assert chosen(include_types=["Conv1d"]) == ["stack.0.1", "stack.1.1"]
    assert chosen(exclude_types=["nn.Conv1d"]) == ["stack.0.0", "stack.1.0", "head"]
    assert reasons(include_types=["Conv1d"])["head"] == "type Linear is not in include_types"


def test_globs_regexes_and_containers():
    assert chosen(exclude=["stack.*.1"]) == ["stack.0.0", "stack.1.0", "head"]
    assert chosen(exclude=["stack.1"]) == ["stack.0.0", "stack.0.1", "head"]  # a container excludes its subtree
    assert chosen(include=[r"re:stack\.\d\.0"]) == ["stack.0.0", "stack.1.0"]
    assert chosen(include=["head"]) == ["head"]
    assert reasons(exclude=["head"])["head"] == "excluded by pattern 'head'"


def test_explicit_layers_win_over_type_rules():
    assert chosen(layers=["head", "stack.1.1"], exclude_types=["Linear"]) == ["stack.1.1", "head"]
    assert reasons(layers=["head"])["stack.0.0"] == "not ticked in the layer list"


def test_unknown_explicit_layer_is_an_error():
    with pytest.raises(ConfigError, match="no module named nope"):
        chosen(layers=["nope"])


def test_bad_regex_is_a_config_error():
    with pytest.raises(ConfigError, match="regular expression"):
        chosen(include=["re:("])


def test_module_table_sums_and_flags():
    model = Custom()
    rows = {r.name: r for r in module_table(model)}
    assert rows[""].params == sum(p.numel() for p in model.parameters())
    assert rows["stack"].params == sum(p.numel() for p in model.stack.parameters())
    assert rows["stack.0.0"].quantizable and rows["stack.0.0"].is_leaf
    assert rows["stack.0.0"].parent == "stack.0"
    assert not rows["norm"].quantizable and "no quantized replacement" in rows["norm"].reason
    assert not rows["attn.out_proj"].quantizable
    assert rows["head"].bytes == (4 * 2 + 2) * 4
