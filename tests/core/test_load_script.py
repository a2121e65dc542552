"""Model scripts: discovery order, ambiguity, entry kwargs, script errors, private imports."""

from __future__ import annotations

import os
import sys
import textwrap

import pytest
import torch

from mono_quant_core.errors import AmbiguousEntryError, ConfigError, ScriptError
from mono_quant_core.loading import import_script, list_entries, load_model, open_model

HEADER = "import torch\nfrom torch import nn\n"
NET = """
class Net(nn.Module):
    def __init__(self, width=3):
        super().__init__()
        self.fc = nn.Linear(2, width)
    def forward(self, x):
        return self.fc(x)
"""


def script(folder, body, name="model.py"):
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(HEADER + textwrap.dedent(body))
    return path


def test_named_entry_wins_over_discovery(tmp_path):
    path = script(tmp_path, NET + "def build_model():\n    return Net(5)\n")
    assert load_model(path, entry="Net").fc.out_features == 3
    assert load_model(path).fc.out_features == 5


@pytest.mark.parametrize("factory", ["build_model", "create_model", "get_model", "make_model"])
def test_each_factory_name_is_found(tmp_path, factory):
    path = script(tmp_path, NET + f"def {factory}():\n    return Net(7)\n")
    loaded = open_model(path)
    assert loaded.source["entry"] == factory
    assert loaded.model.fc.out_features == 7
    assert not loaded.model.training  # eval mode


def test_factory_comes_before_instance_and_class(tmp_path):
    path = script(tmp_path, NET + "model = Net(4)\ndef get_model():\n    return Net(6)\n")
    assert list_entries(path) == ["get_model", "model", "Net"]
    assert load_model(path).fc.out_features == 6


def test_module_level_instance_is_copied(tmp_path):
    path = script(tmp_path, NET + "model = Net(4)\n")
    assert list_entries(path) == ["model", "Net"]
    loaded = load_model(path)
    assert loaded.fc.out_features == 4
    # A copy: the script's own object stays as it was when the model is changed.
    instance = import_script(path).model
    assert loaded is not instance
    with torch.no_grad():
        loaded.fc.weight.zero_()
    assert instance.fc.weight.abs().sum() > 0


def test_single_class_without_arguments(tmp_path):
    path = script(
        tmp_path,
        NET
        + """
class NeedsArgs(nn.Module):
    def __init__(self, depth):
        super().__init__()
""",
    )
    assert list_entries(path) == ["Net"]
    assert open_model(path).source["entry"] == "Net"


def test_imported_classes_are_not_candidates(tmp_path):
    path = script(tmp_path, NET + "from torch.nn import Linear, ReLU\n")
    assert list_entries(path) == ["Net"]


def test_two_classes_are_ambiguous(tmp_path):
    path = script(tmp_path, NET + NET.replace("Net", "Other"))
    with pytest.raises(AmbiguousEntryError) as err:
        load_model(path)
    assert err.value.candidates == ["Net", "Other"]
    assert "Net, Other" in str(err.value) and "entry" in str(err.value)
    assert load_model(path, entry="Other").fc.out_features == 3


def test_two_factories_are_ambiguous_but_aliases_are_not(tmp_path):
    path = script(tmp_path, NET + "def build_model():\n    return Net()\ndef make_model():\n    return Net()\n")
    with pytest.raises(AmbiguousEntryError) as err:
        load_model(path)
    assert err.value.candidates == ["build_model", "make_model"]
    alias = script(tmp_path / "alias", NET + "def build_model():\n    return Net()\nget_model = build_model\n")
    assert open_model(alias).source["entry"] == "build_model"


def test_nothing_found_names_classes_that_need_arguments(tmp_path):
    path = script(tmp_path, "class Deep(nn.Module):\n    def __init__(self, depth):\n        super().__init__()\n")
    with pytest.raises(ScriptError, match=r"no model found.*Deep\(depth\)"):
        load_model(path)
    assert list_entries(path) == []


def test_unknown_entry_lists_candidates(tmp_path):
    path = script(tmp_path, NET)
    with pytest.raises(ScriptError, match=r"no entry named 'Missing'; candidates: Net"):
        load_model(path, entry="Missing")


@pytest.mark.parametrize("kwargs", [{"width": 9}, '{"width": 9}'])
def test_entry_kwargs_as_dict_or_json(tmp_path, kwargs):
    path = script(tmp_path, NET + "def build_model(width):\n    return Net(width)\n")
    loaded = open_model(path, entry_kwargs=kwargs)
    assert loaded.model.fc.out_features == 9
    assert loaded.source["entry_kwargs"] == {"width": 9}
    assert load_model(path, entry="Net", entry_kwargs=kwargs).fc.out_features == 9


def test_bad_entry_kwargs(tmp_path):
    path = script(tmp_path, NET)
    with pytest.raises(ConfigError, match="entry_kwargs: not valid JSON"):
        load_model(path, entry_kwargs="{width: 2")
    with pytest.raises(ConfigError, match="entry_kwargs: must be a JSON object"):
        load_model(path, entry_kwargs="[1, 2]")
    with pytest.raises(ScriptError, match=r"Net\(width=3\) does not accept entry_kwargs"):
        load_model(path, entry_kwargs={"depth": 2})


def test_factory_must_return_a_module(tmp_path):
    path = script(tmp_path, "def build_model():\n    return 42\n")
    with pytest.raises(ScriptError, match=r"build_model\(\) returned a int, not an nn.Module"):
        load_model(path)


def test_import_error_carries_the_scripts_traceback(tmp_path):
    path = script(tmp_path, "def helper():\n    raise ValueError('bad config value 17')\nhelper()\n")
    with pytest.raises(ScriptError) as err:
        load_model(path)
    text = str(err.value)
    assert "model.py: the script raised ValueError: bad config value 17 while importing it" in text
    assert "Traceback (most recent call last)" in text
    assert f'File "{path}", line 5, in <module>' in text and "in helper" in text
    assert "mono_quant_core" not in text  # only the user's frames
    assert isinstance(err.value.__cause__, ValueError)


def test_factory_error_and_syntax_error(tmp_path):
    path = script(tmp_path, "def build_model():\n    return undefined_name\n")
    with pytest.raises(ScriptError, match=r"NameError.*in build_model\(\)") as err:
        load_model(path)
    assert "line 4, in build_model" in str(err.value)
    bad = script(tmp_path / "syntax", "def broken(:\n    pass\n")
    with pytest.raises(ScriptError, match="SyntaxError") as err:
        load_model(bad)
    assert "line 3" in str(err.value)


def test_sys_exit_in_script_is_a_script_error(tmp_path):
    path = script(tmp_path, "import sys\nsys.exit(3)\n")
    with pytest.raises(ScriptError, match="SystemExit"):
        load_model(path)


def test_same_file_name_in_two_folders(tmp_path):
    a = script(tmp_path / "a", NET.replace("width=3", "width=11"))
    b = script(tmp_path / "b", NET.replace("width=3", "width=22"))
    ma, mb = import_script(a), import_script(b)
    assert ma.__name__ != mb.__name__
    assert ma.__name__.startswith("_mono_quant_script_")
    assert load_model(a).fc.out_features == 11
    assert load_model(b).fc.out_features == 22


def test_reimport_gives_fresh_classes_only_after_a_change(tmp_path):
    path = script(tmp_path, NET)
    first = import_script(path)
    assert import_script(path) is first
    os.utime(path, ns=(0, 0))  # touched, same contents: same module
    assert import_script(path) is first
    path.write_text(HEADER + NET.replace("width=3", "width=8"))
    second = import_script(path)
    assert second is not first and second.Net is not first.Net
    assert load_model(path).fc.out_features == 8
    assert first.__name__ not in sys.modules and second.__name__ in sys.modules


def test_sibling_modules_and_sys_path(tmp_path):
    for name, width in (("a", 5), ("b", 6)):
        folder = tmp_path / name
        script(folder, f"WIDTH = {width}\n", name="helpers.py")
        script(folder, NET + "from helpers import WIDTH\ndef build_model():\n    return Net(WIDTH)\n")
    before = list(sys.path)
    assert load_model(tmp_path / "a" / "model.py").fc.out_features == 5
    assert load_model(tmp_path / "b" / "model.py").fc.out_features == 6  # its own helpers
    assert sys.path == before
    assert not (tmp_path / "a" / "__pycache__").exists()  # no bytecode written beside user files


def test_a_sibling_module_wins_over_a_same_named_module_imported_earlier(tmp_path, monkeypatch):
    import types

    elsewhere = types.ModuleType("helpers")
    elsewhere.OTHER = 1  # no WIDTH: importing from it would fail
    monkeypatch.setitem(sys.modules, "helpers", elsewhere)
    folder = tmp_path / "c"
    script(folder, "WIDTH = 7\n", name="helpers.py")
    # The factory imports the helper again when it runs: it must get the same one.
    script(
        folder,
        NET + "from helpers import WIDTH\ndef build_model():\n    import helpers\n    return Net(helpers.WIDTH)\n",
    )
    assert load_model(folder / "model.py").fc.out_features == 7
    other = tmp_path / "d"
    script(other, NET + "def build_model():\n    return Net(2)\n")
    assert load_model(other / "model.py").fc.out_features == 2
    assert sys.modules["helpers"] is elsewhere  # put back once another script is imported


def test_missing_or_wrong_script_file(tmp_path):
    with pytest.raises(ScriptError, match=r"nope\.py: model script not found"):
        load_model(tmp_path / "nope.py")
    (tmp_path / "model.txt").write_text("x = 1")
    with pytest.raises(ScriptError, match=r"model\.txt: a model script must be a \.py file"):
        list_entries(tmp_path / "model.txt")


def test_public_names_from_the_package():
    import mono_quant_core

    assert mono_quant_core.load_model is load_model and mono_quant_core.list_entries is list_entries


def test_changed_script_reimports_its_helpers(tmp_path):
    script(tmp_path, "WIDTH = 2\n", name="helper_mod.py")
    path = script(tmp_path, NET + "from helper_mod import WIDTH\ndef build_model():\n    return Net(WIDTH)\n")
    assert load_model(path).fc.out_features == 2
    script(tmp_path, "WIDTH = 4\n", name="helper_mod.py")
    assert load_model(path).fc.out_features == 2  # script unchanged: cached module
    path.write_text(path.read_text() + "# edited\n")
    assert load_model(path).fc.out_features == 4
    assert sys.modules["helper_mod"].WIDTH == 4
