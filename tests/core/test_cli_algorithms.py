"""``quantize``'s algorithm flags: each reaches its QuantConfig field, the job file written with
``--save-job`` keeps it, and a refused value is one clear line naming the flag."""

from __future__ import annotations

import argparse

import pytest

from mono_quant_core.cli.cmd_quantize import add_parser, job_from_args
from mono_quant_core.cli.main import main
from mono_quant_core.errors import ConfigError
from mono_quant_core.jobs import load_job


def parse(tmp_path, *flags: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_parser(parser.add_subparsers())
    script = tmp_path / "m.py"
    script.write_text("import torch\nmodel = torch.nn.Linear(4, 4)\n", encoding="utf-8")
    (tmp_path / "calib").mkdir(exist_ok=True)
    return parser.parse_args(["quantize", "--script", str(script), "--out", str(tmp_path / "o.pt"), *flags])


def test_gptq_flags_reach_the_config_and_the_saved_job(tmp_path):
    args = parse(
        tmp_path,
        "--calib", str(tmp_path / "calib"),
        "--mode", "weight-only",
        "--dtype", "int4",
        "--algorithm", "GPTQ",
        "--gptq-damp", "0.05",
        "--gptq-act-order",
        "--gptq-block-size", "64",
        "--bias-correction",
    )  # fmt: skip
    job = job_from_args(args)
    c = job.config
    assert (c.algorithm, c.gptq_damp, c.gptq_act_order, c.gptq_block_size, c.bias_correction) == (
        "gptq", 0.05, True, 64, True,
    )  # fmt: skip
    assert (c.hqq_iterations, c.smoothquant_alpha) == (20, None)  # untouched defaults
    job.save(tmp_path / "j.toml")
    back = load_job(tmp_path / "j.toml").config
    assert back == c


def test_hqq_and_smoothquant_flags(tmp_path):
    c = job_from_args(parse(tmp_path, "--algorithm", "hqq", "--hqq-iterations", "7")).config
    assert (c.algorithm, c.hqq_iterations, c.gptq_act_order, c.bias_correction) == ("hqq", 7, False, False)
    c = job_from_args(parse(tmp_path, "--calib", str(tmp_path / "calib"), "--smoothquant-alpha", "0.5")).config
    assert (c.algorithm, c.smoothquant_alpha, c.mode) == ("rtn", 0.5, "dynamic")


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--algorithm", "gptq", "--mode", "weight-only"], "--algorithm: needs --calib DIR"),
        (["--smoothquant-alpha", "0.5"], "--smoothquant-alpha: needs --calib DIR"),
        (["--bias-correction", "--mode", "weight-only"], "--bias-correction: needs --calib DIR"),
        (["--algorithm", "gptq", "--calib", "CALIB"], "--algorithm: gptq: GPTQ needs mode weight-only"),
        (["--smoothquant-alpha", "1.5", "--calib", "CALIB"], "--smoothquant-alpha: 1.5 must be in (0, 1]"),
        (["--gptq-damp", "0"], "--gptq-damp: 0.0 must be a number > 0"),
        (["--algorithm", "hqq", "--dtype", "fp16"], "--algorithm: hqq: HQQ fits int8 and int4 scales"),
        (
            ["--bias-correction", "--dtype", "fp16", "--calib", "CALIB"],
            "--bias-correction: bias correction needs int8 or int4",
        ),
    ],
)
def test_refused_values_name_the_flag(tmp_path, flags, message):
    flags = [str(tmp_path / "calib") if f == "CALIB" else f for f in flags]
    with pytest.raises(ConfigError) as exc:
        job_from_args(parse(tmp_path, *flags))
    assert str(exc.value).startswith(message), str(exc.value)


def test_a_refused_value_is_one_line_and_exit_2(tmp_path, capsys):
    script = tmp_path / "m.py"
    script.write_text("", encoding="utf-8")
    argv = ["quantize", "--script", str(script), "--out", str(tmp_path / "o.pt"), "--gptq-damp", "-1"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("mono-quant: error: --gptq-damp: -1.0 must be a number > 0") and err.count("\n") == 1, err
    assert main([*argv[:-2], "--algorithm", "awq"]) == 2
    assert "invalid choice: 'awq'" in capsys.readouterr().err


def test_the_summary_names_the_algorithm_and_its_options():
    from mono_quant_core.cli.results import algorithm_line, describe_algorithm

    assert describe_algorithm(None) == "round to nearest"  # an older report
    assert describe_algorithm({"algorithm": "gptq"}) == "GPTQ (damp 0.01)"
    got = describe_algorithm(
        {"algorithm": "gptq", "gptq_damp": 0.1, "gptq_act_order": True, "gptq_block_size": 32, "bias_correction": True}
    )
    assert got == "GPTQ (damp 0.1, act order, block 32) + bias correction"
    assert algorithm_line({"algorithm": "hqq", "smoothquant_alpha": 0.5}) == (
        "algorithm HQQ (20 iterations) + SmoothQuant 0.5"
    )
