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
    assert chosen() == ["stack.0.0", "stack.0.1", "stack.1.0", "stack.1.1", "attn", "head"]


def test_unsupported_layers_are_skipped_with_reasons():
    r = reasons()
    assert "no quantized replacement (norm layers stay float" in r["norm"]
    assert "attn" not in r and "attn.out_proj" not in r  # the attention's twin owns its out_proj
    r = reasons(exclude=["attn"])
    assert r["attn"] == "excluded by pattern 'attn'"
    assert r["attn.out_proj"] == (
        "part of the parent MultiheadAttention, which stays float (excluded by pattern 'attn')"
    )


def test_attention_subclass_blocks_its_out_proj():
    class MyAttention(nn.MultiheadAttention):  # may read its weights its own way: not replaced
        pass

    model = nn.Sequential(MyAttention(4, 1), nn.Linear(4, 4))
    sel = select_layers(model, QuantConfig())
    assert sel.chosen == ["1"]
    r = {s.name: s.reason for s in sel.skipped}
    assert "no quantized replacement" in r["0"]
    assert r["0.out_proj"] == "its weight is read directly by the parent MyAttention"


def test_non_dynamically_quantizable_linear_selects_as_linear():
    from torch.nn.modules.linear import NonDynamicallyQuantizableLinear

    model = nn.Sequential(NonDynamicallyQuantizableLinear(4, 4), nn.Conv1d(4, 4, 1))
    assert select_layers(model, QuantConfig(include_types=["Linear"])).chosen == ["0"]
    assert select_layers(model, QuantConfig(exclude_types=["Linear"])).chosen == ["1"]


def test_include_and_exclude_types():
    assert chosen(include_types=["Conv1d"]) == ["stack.0.1", "stack.1.1"]
    assert chosen(exclude_types=["nn.Conv1d"]) == ["stack.0.0", "stack.1.0", "attn", "head"]
    assert reasons(include_types=["Conv1d"])["head"] == "type Linear is not in include_types"


def test_globs_regexes_and_containers():
    assert chosen(exclude=["stack.*.1"]) == ["stack.0.0", "stack.1.0", "attn", "head"]
    assert chosen(exclude=["stack.1"]) == ["stack.0.0", "stack.0.1", "attn", "head"]  # a container excludes its subtree
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
    assert rows["attn"].quantizable
    assert not rows["attn.out_proj"].quantizable
    assert rows["attn.out_proj"].reason == "part of the parent MultiheadAttention: quantized with it"
    assert rows["head"].bytes == (4 * 2 + 2) * 4
