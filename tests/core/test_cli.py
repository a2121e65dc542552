"""The ``mono-quant`` command line: end to end in subprocesses, error paths in-process via main()."""

from __future__ import annotations

import importlib.metadata
import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from test_jobs import write_project

from mono_quant_core.cli.main import main
from mono_quant_core.cli.progress_line import ProgressPrinter
from mono_quant_core.jobs import load_job

CLI = [sys.executable, "-m", "mono_quant_core.cli"]


def cli(cwd, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *args], cwd=cwd, capture_output=True, text=True, timeout=120)


def tensors(path: str) -> dict:
    import torch
    from safetensors.torch import load_file

    if path.endswith(".safetensors"):
        return load_file(path)
    return torch.load(path, weights_only=True)["state_dict"]


def assert_same_tensors(a: str, b: str) -> None:
    import torch

    ta, tb = tensors(a), tensors(b)
    assert sorted(ta) == sorted(tb)
    for key in ta:
        assert ta[key].dtype == tb[key].dtype and torch.equal(ta[key], tb[key]), key


def test_quantize_save_job_then_run_reproduces_bit_for_bit(tmp_path):
    """quantize --save-job, then run that job (next to a broken and another good one).

    Checks: exit 0 then 1; the job's tensors and report figures equal quantize's;
    the broken job is named in the summary and the third job still ran; inspect --json.
    """
    write_project(tmp_path)
    first = cli(
        tmp_path,
        "quantize",
        "--script",
        "model.py",
        "--checkpoint",
        "ckpt.pt",
        "--calib",
        "calib",
        "--samples",
        "8",
        "--seed",
        "1",
        "--mode",
        "static",
        "--observer",
        "histogram",
        "--exclude",
        "nothing.*",
        "--out",
        "q.safetensors",
        "--report",
        "q.json",
        "--save-job",
        "a.toml",
    )
    assert first.returncode == 0, first.stderr
    assert "saved job a.toml" in first.stdout and "wrote q.safetensors" in first.stdout
    progress = [line for line in first.stderr.splitlines() if line.startswith("[")]
    assert progress[0] == "[    ] loading model.py" and progress[-1] == "[100%] saving q.safetensors"
    assert "Traceback" not in first.stderr
    job = load_job(tmp_path / "a.toml")
    assert (job.script, job.samples, job.seed) == (str(tmp_path / "model.py"), 8, 1)
    assert 'script = "model.py"' in (tmp_path / "a.toml").read_text()

    os.rename(tmp_path / "q.safetensors", tmp_path / "ref.safetensors")
    os.rename(tmp_path / "q.json", tmp_path / "ref.json")
    (tmp_path / "broken.toml").write_text(
        '[model]\nscript = "missing.py"\n[output]\npath = "never.pt"\n', encoding="utf-8"
    )
    (tmp_path / "c.toml").write_text(
        '[model]\nscript = "model.py"\ncheckpoint = "ckpt.pt"\n'
        '[quantization]\ndtype = "int4"\nmode = "weight-only"\ngranularity = "per-group"\n'
        'group_size = 8\n[output]\npath = "c.pt"\n',
        encoding="utf-8",
    )
    batch = cli(tmp_path, "run", "a.toml", "broken.toml", "c.toml")
    assert batch.returncode == 1, batch.stderr
    lines = batch.stdout.splitlines()
    assert lines[0].split() == ["job", "status", "output", "SQNR", "size", "time"]
    assert lines[2].split()[:3] == ["a.toml", "done", "q.safetensors"]
    assert lines[3].split()[:3] == ["broken.toml", "failed", "—"]
    assert lines[4].split()[:3] == ["c.toml", "done", "c.pt"]
    assert "2 of 3 jobs done, 1 failed:" in batch.stdout
    assert f"broken.toml: {tmp_path / 'missing.py'}: no such model script" in batch.stdout
    assert not (tmp_path / "never.pt").exists()

    assert_same_tensors(str(tmp_path / "ref.safetensors"), str(tmp_path / "q.safetensors"))
    ref = json.loads((tmp_path / "ref.json").read_text())
    again = json.loads((tmp_path / "q.json").read_text())
    for key in (
        "output_sqnr_db",
        "original_bytes",
        "quantized_bytes",
        "compression_ratio",
        "calibration_samples",
        "validation_samples",
        "layers",
        "skipped",
        "passed",
        "load_test_passed",
        "weight_range_valid",
        "config",
    ):
        assert again[key] == ref[key], key
    from mono_quant_core.serialization import read_metadata

    meta_ref, meta_again = (read_metadata(str(tmp_path / n)) for n in ("ref.safetensors", "q.safetensors"))
    for key in ("config", "layers", "skipped", "calibration", "source"):
        assert meta_again[key] == meta_ref[key], key
    assert meta_ref["calibration"]["samples"] > 0 and meta_ref["source"]["checkpoint_sha256"]

    shown = cli(tmp_path, "inspect", "c.pt", "--json")
    assert shown.returncode == 0, shown.stderr
    info = json.loads(shown.stdout)
    assert info["format"] == "pt" and info["config"]["dtype"] == "int4"
    assert [layer["name"] for layer in info["layers"]] == ["fc1", "fc2"]


@pytest.mark.parametrize(
    "args, message",
    [
        (
            ["quantize", "--script", "m.py", "--out", "o.pt", "--dtype", "int3"],
            "mono-quant: error: argument --dtype: invalid choice: 'int3'",
        ),
        (
            ["quantize", "--script", "m.py", "--out", "o.pt", "--mode", "static"],
            "mono-quant: error: --mode static needs --calib DIR",
        ),
        (
            ["quantize", "--script", "m.py", "--out", "o.pt", "--entry-kwargs", "[8]"],
            "mono-quant: error: --entry-kwargs: must be a JSON object of keyword arguments"
            " like '{\"width\": 8}', got list",
        ),
        (
            ["quantize", "--script", "m.py", "--out", "o.pt", "--entry-kwargs", "{width"],
            "mono-quant: error: --entry-kwargs: not valid JSON",
        ),
    ],
)
def test_usage_errors_exit_2_with_one_line(tmp_path, args, message):
    """Usage errors need no torch: one line on stderr, exit 2, nothing on stdout."""
    out = cli(tmp_path, *args)
    assert out.returncode == 2
    assert out.stderr.startswith(message) and out.stderr.count("\n") == 1, out.stderr
    assert out.stdout == ""


def test_console_script_points_at_main():
    (entry,) = importlib.metadata.entry_points(group="console_scripts", name="mono-quant")
    assert entry.load() is main


@pytest.mark.parametrize("command", [[], ["quantize"], ["sensitivity"], ["run"], ["inspect"]])
def test_help_shows_examples(command, capsys):
    assert main([*command, "--help"]) == 0
    out = capsys.readouterr().out
    assert "examples:\n  mono-quant " in out and "exit status: 0" in out


def test_exit_codes_in_process(tmp_path, capsys):
    """1: validation failed (200 dB with on_failure error); 2: missing inputs, bad JSON, bad files."""
    p = write_project(tmp_path)
    base = ["quantize", "--script", p.path("model.py"), "--checkpoint", p.path("ckpt.pt")]
    cases = [
        (
            [
                *base,
                "--calib",
                p.path("calib"),
                "--min-output-sqnr",
                "200",
                "--on-failure",
                "error",
                "--report",
                p.path("r.json"),
                "--out",
                p.path("x.safetensors"),
            ],
            1,
            "validation failed: output SQNR",
        ),
        (
            ["quantize", "--script", p.path("nope.py"), "--out", p.path("x.pt")],
            2,
            f"{p.path('nope.py')}: no such model script",
        ),
        (
            [*base[:3], "--checkpoint", p.path("nope.pt"), "--out", p.path("x.pt")],
            2,
            f"{p.path('nope.pt')}: no such checkpoint",
        ),
        ([*base, "--entry-kwargs", "[1]", "--out", p.path("x.pt")], 2, "--entry-kwargs: must be a JSON object"),
        ([*base, "--samples", "3", "--out", p.path("x.pt")], 2, "--samples: given without a calibration folder"),
        (
            [
                *base,
                "--mode",
                "weight-only",
                "--granularity",
                "per-group",
                "--group-size",
                "3",
                "--out",
                p.path("x.pt"),
            ],
            2,
            "--group-size: 3 must be an even integer",
        ),
        ([*base, "--out", p.path("x.onnx")], 2, "--out: "),
        ([*base, "--out", p.path("ckpt.pt")], 2, f"{p.path('ckpt.pt')}: is the checkpoint; refusing"),
        (
            [*base, "--out", p.path("x.pt"), "--report", p.path("model.py")],
            2,
            f"{p.path('model.py')}: is the model script; refusing",
        ),
        ([*base, "--out", p.path("x.pt"), "--no-run"], 2, "--no-run: only useful with --save-job"),
        (["inspect", p.path("nope.safetensors")], 2, f"{p.path('nope.safetensors')}: no such file"),
        (["inspect", p.path("ckpt.pt")], 2, f"{p.path('ckpt.pt')}: "),
    ]
    for argv, code, message in cases:
        assert main(argv) == code, argv
        err = capsys.readouterr().err
        assert err.splitlines()[-1].startswith(f"mono-quant: error: {message}"), (argv, err)
        assert "Traceback" not in err
    report = json.loads(Path(p.path("r.json")).read_text(encoding="utf-8"))
    assert report["passed"] is False and not os.path.exists(p.path("x.safetensors"))


def test_save_job_no_run_then_run_json(tmp_path, capsys):
    """--save-job --no-run writes only the job (paths relative to it); run --json reads it back."""
    p = write_project(tmp_path)
    jobs = tmp_path / "jobs"
    jobs.mkdir()
    shutil.copy(p.path("model.py"), jobs / "model.py")
    argv = [
        "quantize",
        "--script",
        str(jobs / "model.py"),
        "--checkpoint",
        p.path("ckpt.pt"),
        "--entry",
        "build_model",
        "--entry-kwargs",
        '{"width": 16}',
        "--dtype",
        "fp16",
        "--out",
        str(jobs / "half.safetensors"),
        "--save-job",
        str(jobs / "half.toml"),
        "--no-run",
    ]
    assert main(argv) == 0
    assert not (jobs / "half.safetensors").exists()
    text = (jobs / "half.toml").read_text()
    assert 'script = "model.py"' in text and f'checkpoint = "{p.path("ckpt.pt")}"' in text
    assert "entry_kwargs = { width = 16 }" in text
    capsys.readouterr()
    (jobs / "bad.toml").write_text("[model\n", encoding="utf-8")
    assert main(["run", str(jobs / "half.toml"), str(jobs / "bad.toml"), "--json"]) == 1
    rows = json.loads(capsys.readouterr().out)
    assert [(r["status"], r["output"]) for r in rows] == [("done", str(jobs / "half.safetensors")), ("failed", None)]
    assert rows[0]["file_bytes"] == os.path.getsize(jobs / "half.safetensors")
    assert "not valid TOML" in rows[1]["error"]


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_plain_progress_is_throttled_per_phase():
    stream, clock = io.StringIO(), FakeClock()
    printer = ProgressPrinter(stream, tty=False, clock=clock)
    printer(0, 0, "loading model.py")
    for i in range(1, 65):
        clock.now += 0.01
        printer(i, 100, f"calibrating {i}/64")
    clock.now += 5
    printer(70, 100, "calibrating 64/64")
    printer(80, 100, "quantized fc1")
    printer(100, 100, "saving q.pt")
    assert stream.getvalue().splitlines() == [
        "[    ] loading model.py",
        "[  1%] calibrating 1/64",
        "[ 70%] calibrating 64/64",
        "[ 80%] quantized fc1",
        "[100%] saving q.pt",
    ]


def test_tty_progress_redraws_one_line_and_clears_it():
    stream, clock = io.StringIO(), FakeClock()
    printer = ProgressPrinter(stream, tty=True, clock=clock, width=61)
    printer(1, 4, "calibrating 1/4")
    clock.now += 0.05
    printer(2, 4, "calibrating 2/4")  # too soon: skipped
    clock.now += 0.1
    printer(3, 4, "calibrating 3/4")
    printer.finish()
    frames = stream.getvalue().split("\r")
    assert frames[1] == "[######..................]  25% calibrating 1/4".ljust(60)
    assert frames[2] == "[##################......]  75% calibrating 3/4".ljust(60)
    assert frames[3:] == [" " * 60, ""] and "\n" not in stream.getvalue()


def test_a_missing_job_file_is_named_once(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["run", "nope.toml"]) == 1
    out, err = capsys.readouterr()
    assert "  nope.toml: no such job file" in out.splitlines()
    assert "mono-quant: error: nope.toml: no such job file" in err.splitlines()


def test_skip_unusable_leaves_out_a_damaged_calibration_file(tmp_path, capsys):
    """Without --skip-unusable a damaged file stops the run (exit 2, named); with it the file is
    left out and the report lists it, as the window's "Skip files that cannot be used" does."""
    p = write_project(tmp_path)
    Path(p.path("calib", "x3.pt")).write_bytes(b"not a tensor")
    base = ["quantize", "--script", p.path("model.py"), "--checkpoint", p.path("ckpt.pt"), "--calib", p.path("calib")]
    assert main([*base, "--mode", "static", "--out", p.path("a.safetensors")]) == 2
    assert "x3.pt" in capsys.readouterr().err.splitlines()[-1]
    out = [*base, "--mode", "static", "--skip-unusable", "--report", p.path("r.json"), "--out", p.path("b.safetensors")]
    assert main(out) == 0
    report = json.loads(Path(p.path("r.json")).read_text(encoding="utf-8"))
    assert [entry["file"] for entry in report["calibration_skipped"]] == ["x3.pt"]
