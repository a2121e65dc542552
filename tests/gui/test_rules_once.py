"""Each rule lives once, in the engine: the window's answers equal the engine's for every value
(name patterns, checkpoint suffixes, value spellings, choices and defaults, "static needs
calibration", "is a cast")."""

from __future__ import annotations

import itertools

import pytest
from torch import nn

from mono_quant_core import module_table, select_layers
from mono_quant_core.config import (
    CHECKPOINT_SUFFIXES,
    DTYPES,
    GRANULARITIES,
    MODES,
    OBSERVERS,
    ON_FAILURE,
    SCHEMES,
    QuantConfig,
)
from mono_quant_core.errors import ConfigError
from mono_quant_core.loading.checkpoint_files import open_checkpoint
from mono_quant_gui.modules import tree_model as tm
from mono_quant_gui.queue.from_checkpoints import checkpoint_stem
from mono_quant_gui.settings import settings_rules as rules
from mono_quant_gui.settings.settings_panel import SettingsPanel
from mono_quant_gui.window import dialogs
from mono_quant_gui.window.drop import classify


def valid_configs():
    """Every (dtype, mode) pair the engine accepts, with its QuantConfig."""
    for dtype, mode in itertools.product(DTYPES, MODES):
        try:
            yield dtype, mode, QuantConfig(dtype=dtype, mode=mode, granularity="per-channel")
        except ConfigError:
            continue


@pytest.fixture
def panel(qtbot):
    p = SettingsPanel()
    qtbot.addWidget(p)
    return p


# -- "static needs calibration", "is a cast" ---------------------------------------------------------
@pytest.mark.parametrize("has_calibration", [False, True])
def test_needs_a_folder_is_the_engines_needs_calibration(panel, has_calibration):
    panel.set_calibration_available(has_calibration)
    for dtype, mode, config in valid_configs():
        values = {**rules.DEFAULTS, "dtype": dtype, "mode": mode}
        expected = config.needs_calibration and not has_calibration
        assert (rules.option_problem(values, "mode", mode, has_calibration) == rules.NEEDS_FOLDER) == expected
        assert (rules.missing_calibration(values, has_calibration) == rules.NEEDS_FOLDER) == expected
        if not expected:  # a mode the panel can take: its problem agrees too
            panel.set_values({"dtype": dtype, "mode": mode})
            assert panel.values()["mode"] == mode
            assert panel.problem() != rules.NEEDS_FOLDER


def test_what_applies_follows_the_engines_cast_and_calibration_rules():
    for dtype, mode, config in valid_configs():
        applies = rules.applicable({**rules.DEFAULTS, "dtype": dtype, "mode": mode})
        for field in ("mode", "scheme", "granularity"):
            assert (applies[field] is not None) == config.is_cast, (dtype, mode, field)
        assert (applies["observer"] is None) == config.needs_calibration, (dtype, mode)


# -- choices, spellings, defaults ------------------------------------------------------------------
def test_the_panel_offers_the_engines_choices_and_defaults(panel):
    offered = {name: tuple(c.itemText(i) for i in range(c.count())) for name, c in panel.combos.items()}
    assert offered == {
        "dtype": DTYPES,
        "mode": MODES,
        "scheme": SCHEMES,
        "granularity": GRANULARITIES,
        "observer": OBSERVERS,
        "on_failure": ON_FAILURE,
    }
    default = QuantConfig()
    assert panel.group_size.value() == default.group_size
    for name in panel.combos:
        assert panel.values()[name] == getattr(default, name)


def test_saved_values_in_the_engines_other_spellings_are_taken(panel):
    """The engine accepts ``per_tensor`` and any case; the panel used to drop such a saved value."""
    saved = {"dtype": "INT8", "mode": "Weight_Only", "granularity": "PER_TENSOR", "scheme": " Asymmetric"}
    panel.set_values(saved)
    config = QuantConfig(**saved)
    assert {k: panel.values()[k] for k in saved} == {k: getattr(config, k) for k in saved}


# -- name patterns ---------------------------------------------------------------------------------
class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(4, 8)
        self.act = nn.ReLU()
        self.fc2 = nn.Linear(8, 4)


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.blocks = nn.Sequential(Block(), Block())
        self.encoder = nn.ModuleDict({"layer10": Block(), "layer1": Block()})
        self.head = nn.Linear(4, 2)


PATTERNS = [
    "blocks.*.fc2",
    "blocks.1",  # a container covers its children
    "blocks",
    "encoder.layer1",  # not encoder.layer10
    "encoder.layer1*",
    "*fc1",
    "*",
    "head",
    "hea",
    "re:blocks\\.\\d\\.fc2",
    "re:encoder",  # the whole name: the container, hence its children
    "re:enc",
    "re:.*\\.fc[12]",
    "re:(blocks|head)",
    "nothing",
]


@pytest.mark.parametrize("pattern", PATTERNS)
def test_the_select_box_matches_what_the_engine_selects(qapp, pattern):
    net = Net()
    model = tm.ModuleTreeModel()
    model.set_rows(module_table(net))
    model.set_checked_names([])
    hits = model.set_checked_where(True, pattern=pattern)
    chosen = select_layers(net, QuantConfig(include=[pattern])).chosen
    assert model.checked_names() == chosen and hits == len(chosen)
    model.set_checked_names(model.quantizable_names())
    model.set_checked_where(False, pattern=pattern)
    assert model.checked_names() == select_layers(net, QuantConfig(exclude=[pattern])).chosen


def test_a_bad_regular_expression_is_the_engines_error(qapp):
    model = tm.ModuleTreeModel()
    model.set_rows(module_table(Net()))
    with pytest.raises(ConfigError) as engine:
        select_layers(Net(), QuantConfig(include=["re:("]))
    with pytest.raises(ConfigError) as window:
        model.set_checked_where(True, pattern="re:(")
    assert str(window.value) == str(engine.value)


# -- checkpoint suffixes ---------------------------------------------------------------------------
NAMES = [
    *(f"w{s}" for s in CHECKPOINT_SUFFIXES),
    *(f"W{s.upper()}" for s in CHECKPOINT_SUFFIXES),
    "w.index.json",
    "w.json",
    "w.pkl",
    "w.npz",
    "w.tar",
    "w.safetensors.bak",
]


@pytest.mark.parametrize("name", NAMES)
def test_a_dropped_file_is_a_checkpoint_when_the_engine_would_open_it_as_one(tmp_path, name):
    path = tmp_path / name
    path.write_bytes(b"")
    try:
        open_checkpoint(path)
    except Exception as exc:
        engine_reads_it = "unsupported checkpoint type" not in str(exc)
    else:
        engine_reads_it = True
    assert (classify(str(path)) == "checkpoint") == engine_reads_it
    if engine_reads_it:
        assert checkpoint_stem(str(path)) == name[:1]
    else:
        with pytest.raises(ConfigError):
            checkpoint_stem(str(path))


def test_the_open_dialog_offers_the_engines_checkpoint_suffixes():
    offered = dialogs.CHECKPOINT_FILTER.split(";;")[0].split("(")[1].rstrip(")").split()
    assert offered == [f"*{s}" for s in CHECKPOINT_SUFFIXES]
