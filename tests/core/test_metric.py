"""Task metrics: a script's evaluate(model), the demos' accuracies, and every way a metric can be wrong."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from mono_quant_core import Cancelled, Metric, MetricError, load_metric, load_model
from mono_quant_core.loading.script_import import import_script
from mono_quant_core.metrics import as_metric, metric_drop, primary_key

DEMO = Path(__file__).resolve().parents[2] / "resources" / "demo"
CNN, TRANSFORMER = DEMO / "cnn" / "model.py", DEMO / "transformer" / "model.py"


def _script(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "model.py"
    path.write_text(body)
    return path


def test_cnn_demo_scores_its_held_out_digits():
    metric = load_metric(CNN)
    assert (metric.name, metric.higher_is_better, metric.script) == ("evaluate", True, str(CNN))
    model = load_model(CNN, DEMO / "cnn" / "model.safetensors")
    # Measured 0.988 (491 of the 497 held-out digits).
    assert metric.evaluate(model, "on the float model")["evaluate"] > 0.9
    torch.manual_seed(0)
    untrained = import_script(CNN).build_model().eval()
    # Measured 0.087 (seeds 0-2: 0.04-0.10): chance is 0.1.
    assert metric.evaluate(untrained, "on the float model")["evaluate"] < 0.3


def test_transformer_demo_scores_fresh_sequences():
    metric = load_metric(TRANSFORMER)
    model = load_model(TRANSFORMER, DEMO / "transformer" / "model.safetensors")
    values = metric.evaluate(model, "on the float model")
    assert values == metric.evaluate(model, "on the float model"), "the evaluation set is seeded"
    assert values["evaluate"] > 0.9  # measured 0.954


def test_the_demo_label_rule_is_the_majority_group_with_ties_to_the_lowest():
    rule = import_script(TRANSFORMER).most_frequent_group
    tokens = torch.tensor([[4, 8, 1, 5, 9, 2, 6, 3, 7, 11, 13, 17], [1, 5, 2, 6, 3, 7, 4, 8, 9, 10, 11, 12]])
    # Row 0: group 1 (ids 1 5 9 13 17) beats group 0 (4 8); row 1: all four groups tie at 3.
    assert rule(tokens).tolist() == [1, 0]


def test_a_raising_metric_names_the_script_the_function_and_the_model(tmp_path):
    script = _script(tmp_path, "def evaluate(model):\n    raise ValueError('no data.csv')\n")
    with pytest.raises(MetricError) as info:
        load_metric(script).evaluate(object(), "on the quantized model")
    first = str(info.value).splitlines()[0]
    assert first == "model.py: evaluate(model) raised ValueError: no data.csv (on the quantized model)"
    assert 'model.py", line 2' in str(info.value), "the script's traceback follows"
    assert isinstance(info.value.__cause__, ValueError)
    assert (info.value.script, info.value.function) == (str(script), "evaluate")


@pytest.mark.parametrize(
    ("returned", "shown"),
    [("'good'", "str 'good'"), ("None", "NoneType None"), ("float('nan')", "nan"), ("{}", "dict {}"), ("True", "bool")],
)
def test_a_metric_that_returns_no_number_is_refused(tmp_path, returned, shown):
    script = _script(tmp_path, f"def evaluate(model):\n    return {returned}\n")
    with pytest.raises(MetricError, match=r"^model\.py: evaluate\(model\) returned .*on the float model") as info:
        load_metric(script).evaluate(None, "on the float model")
    assert shown in str(info.value)
    assert info.value.function == "evaluate"


@pytest.mark.parametrize("returned", ["{'top1': 0.5, 2: 0.1}", "{'top1': 'high'}", "[0.5]"])
def test_a_metric_dict_must_map_names_to_numbers(tmp_path, returned):
    script = _script(tmp_path, f"def evaluate(model):\n    return {returned}\n")
    with pytest.raises(MetricError, match="returned"):
        load_metric(script).evaluate(None, "on the float model")


def test_a_dict_keeps_its_keys_in_order_and_numbers_of_any_kind_count(tmp_path):
    script = _script(
        tmp_path,
        "import numpy, torch\n"
        "def evaluate(model):\n"
        "    return {'top5': torch.tensor(0.75), 'top1': numpy.float32(0.5), 'count': 3}\n",
    )
    values = load_metric(script).evaluate(None, "on the float model")
    assert list(values) == ["top5", "top1", "count"] and primary_key(values) == "top5"
    assert values == {"top5": 0.75, "top1": 0.5, "count": 3.0}
    assert all(type(v) is float for v in values.values())


def test_the_metric_runs_without_gradients(tmp_path):
    script = _script(tmp_path, "import torch\ndef evaluate(model):\n    return float(torch.is_grad_enabled())\n")
    assert load_metric(script).evaluate(None, "on the float model") == {"evaluate": 0.0}


def test_a_missing_metric_says_how_to_name_another(tmp_path):
    script = _script(tmp_path, "def accuracy(model):\n    return 1.0\n")
    with pytest.raises(MetricError, match=r"model\.py has no function evaluate\(model\).*--metric NAME") as info:
        load_metric(script)
    assert "accuracy" in str(info.value)
    metric = load_metric(script, "accuracy")
    assert metric.name == "accuracy" and metric.evaluate(None, "on the float model") == {"accuracy": 1.0}


def test_a_metric_that_is_not_callable_is_refused(tmp_path):
    script = _script(tmp_path, "evaluate = 0.9\n")
    with pytest.raises(MetricError, match="evaluate is a float"):
        load_metric(script)


def test_lower_is_better_when_the_script_says_so(tmp_path):
    script = _script(tmp_path, "metric_higher_is_better = False\ndef evaluate(model):\n    return 2.5\n")
    assert load_metric(script).higher_is_better is False


def test_the_direction_must_be_a_bool(tmp_path):
    script = _script(tmp_path, "metric_higher_is_better = 'no'\ndef evaluate(model):\n    return 2.5\n")
    with pytest.raises(MetricError, match="metric_higher_is_better must be True or False, not 'no'"):
        load_metric(script)


def test_cancelling_inside_the_metric_is_not_a_metric_error(tmp_path):
    def evaluate(model):
        raise Cancelled("stopped")

    with pytest.raises(Cancelled):
        as_metric(evaluate).evaluate(None, "on the float model")


def test_a_plain_callable_becomes_a_metric():
    metric = as_metric(lambda model: np.float64(0.25))
    assert (metric.name, metric.higher_is_better, metric.script) == ("<lambda>", True, None)
    assert metric.evaluate(None, "on the float model") == {"<lambda>": 0.25}
    with pytest.raises(MetricError, match=r"^the metric: <lambda>\(model\) raised ZeroDivisionError"):
        as_metric(lambda model: 1 / 0).evaluate(None, "on the float model")


def test_a_callable_may_carry_its_direction():
    def loss(model):
        return 1.0

    loss.higher_is_better = False
    assert as_metric(loss).higher_is_better is False
    given = Metric(loss, "loss", higher_is_better=False)
    assert as_metric(given) is given
    with pytest.raises(MetricError, match="not int"):
        as_metric(3)


def test_metric_drop_is_positive_when_quantized_is_worse():
    assert metric_drop(0.9, 0.85, higher_is_better=True) == pytest.approx(0.05)
    assert metric_drop(2.0, 2.5, higher_is_better=False) == pytest.approx(0.5)
    assert metric_drop(2.0, 1.5, higher_is_better=False) == pytest.approx(-0.5)
