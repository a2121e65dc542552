"""The CLI's accuracy flags on the bundled CNN demo: --override, --target-sqnr, --metric, ``sensitivity``,
and ``run`` of a job with ``[quantization.overrides]`` (bit-identical to ``quantize --override``)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_cli import assert_same_tensors, cli
from test_jobs import write_project

from mono_quant_core import read_metadata
from mono_quant_core.cli.main import main
from mono_quant_core.jobs import load_job

DEMO = Path(__file__).resolve().parents[2] / "resources" / "demo" / "cnn"
INPUTS = [
    "--script",
    str(DEMO / "model.py"),
    "--checkpoint",
    str(DEMO / "model.safetensors"),
    "--calib",
    str(DEMO / "calibration"),
]
OVERRIDES = ["--override", "classifier.*:dtype=fp16", "--override", "features.0:dtype=float"]
#: The demo's held-out top-1 accuracy in float (resources/demo/generate.py).
FLOAT_ACCURACY = 0.988


def test_override_sets_per_layer_dtypes_in_the_file_and_inspect_shows_them(tmp_path):
    out = cli(tmp_path, "quantize", *INPUTS, *OVERRIDES, "--out", "q.safetensors")
    assert out.returncode == 0, out.stderr
    dtypes = {r["name"]: r["dtype"] for r in read_metadata(tmp_path / "q.safetensors")["layers"]}
    assert dtypes == {"features.2": "int8", "features.5": "int8", "classifier.1": "fp16", "classifier.4": "fp16"}
    shown = cli(tmp_path, "inspect", "q.safetensors")
    assert shown.returncode == 0, shown.stderr
    assert "config        int8, dynamic, symmetric, per-channel, 2 layer overrides" in shown.stdout
    rows = {line.split()[0]: line.split()[2] for line in shown.stdout.splitlines() if line.startswith("  classifier")}
    assert rows == {"classifier.1": "fp16", "classifier.4": "fp16"}
    assert any(line.split()[:1] == ["features.0"] for line in shown.stdout.split("skipped (")[1].splitlines())


def test_target_sqnr_keeps_layers_for_accuracy_and_reaches_it(tmp_path):
    """int4 alone gives about 33 dB on the demo; 40 dB needs layers widened to int8."""
    target = 40.0
    args = ["--dtype", "int4", "--mode", "weight-only", "--target-sqnr", str(target), "--fallback", "int8"]
    out = cli(tmp_path, "quantize", *INPUTS, *args, "--report", "r.json", "--out", "q.safetensors")
    assert out.returncode == 0, out.stderr
    report = json.loads((tmp_path / "r.json").read_text(encoding="utf-8"))
    kept = report["kept_for_accuracy"]
    assert kept and all((k["from"], k["to"]) == ("int4", "int8") for k in kept)
    assert report["accuracy_target"]["reached"] is True
    assert report["output_sqnr_db"] >= target
    assert f"target output SQNR >= {target:.1f} dB: reached" in out.stdout
    assert all(f"  {k['name']}: int4 -> int8" in out.stdout for k in kept)
    dtypes = {r["name"]: r["dtype"] for r in read_metadata(tmp_path / "q.safetensors")["layers"]}
    assert {name for name, dtype in dtypes.items() if dtype == "int8"} == {k["name"] for k in kept}


def test_metric_evaluate_measures_the_demo_accuracy(tmp_path):
    out = cli(tmp_path, "quantize", *INPUTS, "--metric", "evaluate", "--report", "r.json", "--out", "q.safetensors")
    assert out.returncode == 0, out.stderr
    metric = json.loads((tmp_path / "r.json").read_text(encoding="utf-8"))["metrics"]["evaluate"]
    assert metric["float"] == pytest.approx(FLOAT_ACCURACY, abs=0.002)
    assert metric["delta"] == pytest.approx(metric["quantized"] - metric["float"])
    assert f"metric evaluate: float {metric['float']:.4f}, quantized {metric['quantized']:.4f}, delta" in out.stdout


def test_target_metric_drop_without_metric_uses_evaluate(tmp_path):
    args = ["--target-metric-drop", "0.01", "--report", "r.json", "--out", "q.safetensors"]
    out = cli(tmp_path, "quantize", *INPUTS, *args)
    assert out.returncode == 0, out.stderr
    report = json.loads((tmp_path / "r.json").read_text(encoding="utf-8"))
    assert report["metrics"]["evaluate"]["float"] == pytest.approx(FLOAT_ACCURACY, abs=0.002)
    assert report["accuracy_target"]["achieved_metric_drop"] <= 0.01


def test_target_metric_drop_needs_a_metric(tmp_path, capsys):
    p = write_project(tmp_path)  # its script defines no evaluate(model)
    argv = ["quantize", "--script", p.path("model.py"), "--calib", p.path("calib"), "--target-metric-drop", "0.01"]
    assert main([*argv, "--out", p.path("q.safetensors")]) == 2
    err = capsys.readouterr().err.splitlines()[-1]
    assert err.startswith("mono-quant: error: a target metric drop needs a task metric and none is named: ")
    assert "no function evaluate(model)" in err and "--metric NAME" in err
    assert main([*argv[:3], "--target-sqnr", "30", "--out", p.path("q.safetensors")]) == 2
    assert capsys.readouterr().err.startswith("mono-quant: error: --target-sqnr: needs --calib DIR")


@pytest.mark.parametrize(
    "text, problem",
    [
        ("head", "expected PATTERN:FIELD=VALUE"),
        ("head.*:dtype", "'dtype' is not FIELD=VALUE"),
        ("head.*:bits=4", "'bits' cannot be set per layer; use dtype, mode, scheme, granularity, group_size"),
        ("head.*:group_size=x", "group_size 'x' is not an integer"),
        ("head.*:dtype=int3", "dtype 'int3' is not allowed; choose one of int8, int4, fp16, bf16, float"),
        ("re:(:dtype=int8", "not a valid regular expression"),
    ],
)
def test_a_bad_override_names_the_flag_and_the_text(tmp_path, capsys, text, problem):
    argv = ["quantize", "--script", "m.py", "--out", "o.pt", "--override", "fc1:dtype=fp16", "--override", text]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"mono-quant: error: --override {text!r}: ") and problem in err, err
    assert err.count("\n") == 1


def test_sensitivity_ranks_every_selected_layer_and_writes_json(tmp_path):
    args = ["--exclude", "classifier.4", "--report", "sens.json"]
    out = cli(tmp_path, "sensitivity", *INPUTS, *args)
    assert out.returncode == 0, out.stderr
    report = json.loads((tmp_path / "sens.json").read_text(encoding="utf-8"))
    layers = report["layers"]
    assert sorted(layer["name"] for layer in layers) == ["classifier.1", "features.0", "features.2", "features.5"]
    sqnr = [layer["output_sqnr_db"] for layer in layers]
    assert sqnr == sorted(sqnr) and [layer["rank"] for layer in layers] == [1, 2, 3, 4]
    assert all(layer["metric_drop"] is None for layer in layers)
    lines = out.stdout.splitlines()
    assert lines[0].split() == ["rank", "layer", "type", "dtype", "output", "SQNR", "weight", "SQNR"]
    assert [line.split()[1] for line in lines[2:6]] == [layer["name"] for layer in layers]
    assert f"all 4 layers quantized: output SQNR {report['all_quantized_output_sqnr_db']:.1f} dB" in out.stdout
    progress = [line for line in out.stderr.splitlines() if line.startswith("[")]
    assert progress[0] == "[    ] loading model.py" and progress[-1].startswith("[100%] measured")


def test_sensitivity_with_a_metric_ranks_by_its_drop(tmp_path):
    out = cli(tmp_path, "sensitivity", *INPUTS, "--metric", "evaluate", "--report", "sens.json")
    assert out.returncode == 0, out.stderr
    report = json.loads((tmp_path / "sens.json").read_text(encoding="utf-8"))
    drops = [layer["metric_drop"] for layer in report["layers"]]
    assert len(drops) == 5 and drops == sorted(drops, reverse=True)
    assert report["float_metric"] == pytest.approx(FLOAT_ACCURACY, abs=0.002)
    assert "evaluate drop" in out.stdout.splitlines()[0]


def test_a_job_with_overrides_runs_bit_identical_to_quantize_override(tmp_path):
    """quantize --override --metric --save-job writes the keys; a hand-written job runs the same tensors."""
    args = ["--metric", "evaluate", "--out", "a.safetensors", "--save-job", "a.toml"]
    out = cli(tmp_path, "quantize", *INPUTS, *OVERRIDES, *args)
    assert out.returncode == 0, out.stderr
    saved = load_job(tmp_path / "a.toml")
    assert saved.metric == "evaluate"
    assert saved.config.layer_overrides == {"classifier.*": {"dtype": "fp16"}, "features.0": {"dtype": "float"}}
    (tmp_path / "b.toml").write_text(
        f'[model]\nscript = "{DEMO / "model.py"}"\ncheckpoint = "{DEMO / "model.safetensors"}"\n'
        f'[calibration]\nfolder = "{DEMO / "calibration"}"\n'
        '[validation]\nmetric = "evaluate"\n'
        '[output]\npath = "b.safetensors"\nreport = "b.json"\n'
        '[quantization.overrides]\n"classifier.*" = { dtype = "fp16" }\n"features.0" = { dtype = "float" }\n',
        encoding="utf-8",
    )
    ran = cli(tmp_path, "run", "b.toml")
    assert ran.returncode == 0, ran.stderr
    assert_same_tensors(str(tmp_path / "a.safetensors"), str(tmp_path / "b.safetensors"))
    report = json.loads((tmp_path / "b.json").read_text(encoding="utf-8"))
    assert report["metrics"]["evaluate"]["float"] == pytest.approx(FLOAT_ACCURACY, abs=0.002)


def test_sensitivity_usage_errors_exit_2(tmp_path, capsys):
    p = write_project(tmp_path)
    base = ["sensitivity", "--script", p.path("model.py"), "--checkpoint", p.path("ckpt.pt")]
    cases = [
        (base, "--calib: sensitivity needs a folder of samples"),
        ([*base, "--calib", p.path("nope")], f"{p.path('nope')}: no such calibration folder"),
        ([*base, "--calib", p.path("calib"), "--override", "fc1"], "--override 'fc1': expected PATTERN:FIELD=VALUE"),
        ([*base, "--calib", p.path("calib"), "--metric", "evaluate"], "model.py has no function evaluate(model)"),
        ([*base, "--calib", p.path("calib"), "--report", p.path("no", "s.json")], f"{p.path('no', 's.json')}: "),
    ]
    for argv, message in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert err.splitlines()[-1].startswith(f"mono-quant: error: {message}"), (argv, err)
    assert main([*base, "--calib", p.path("calib"), "--report", p.path("s.json")]) == 0
    assert "all 2 layers quantized" in capsys.readouterr().out
    assert sorted(layer["name"] for layer in json.loads(Path(p.path("s.json")).read_text())["layers"]) == ["fc1", "fc2"]


def test_a_repeated_override_adds_to_its_fields_and_counts_as_given_last():
    from mono_quant_core.cli.main import build_parser
    from mono_quant_core.cli.quant_flags import config_from_args

    given = ["x.*:dtype=fp16", "x.1*:dtype=bf16", "x.*:granularity=per-tensor,dtype=int8"]
    argv = ["quantize", "--script", "m.py", "--out", "o.pt"] + [a for text in given for a in ("--override", text)]
    config = config_from_args(build_parser().parse_args(argv))
    assert list(config.layer_overrides) == ["x.1*", "x.*"]
    assert config.layer_overrides["x.*"] == {"dtype": "int8", "granularity": "per-tensor"}
    layer = config.layer_config("x.1")  # both patterns match: the last given wins
    assert layer is not None and (layer.dtype, layer.granularity) == ("int8", "per-tensor")
