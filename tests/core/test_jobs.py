"""Job files: TOML round trip, parsing, errors naming section and key, and run_job end to end."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from mono_quant_core.config import QuantConfig
from mono_quant_core.errors import CalibrationError, Cancelled, ConfigError, ScriptError, ValidationFailed
from mono_quant_core.jobs import SECTIONS, Job, load_job, parse_job, run_job
from mono_quant_core.jobs.schema import CONFIG_SECTIONS, config_field, is_config_key
from mono_quant_core.jobs.toml_writer import toml_string, toml_value
from mono_quant_core.progress import CancelToken

MODEL_SCRIPT = """\
from torch import nn


class Net(nn.Module):
    def __init__(self, width=16):
        super().__init__()
        self.fc1 = nn.Linear(16, width)
        self.act = nn.ReLU()
        self.fc2 = nn.Linear(width, 4)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


def build_model(width=16):
    return Net(width)
"""


@dataclasses.dataclass
class Project:
    """A tiny model script, its checkpoint and a calibration folder of 10 tensors in ``root``."""

    root: str

    def path(self, *parts: str) -> str:
        return os.path.join(self.root, *parts)

    def job(self, out: str = "out.safetensors", report: bool = False, **settings) -> Job:
        static = settings.get("mode") == "static"
        return Job(
            script=self.path("model.py"),
            checkpoint=self.path("ckpt.pt"),
            output=self.path(out),
            config=QuantConfig(**settings),
            calibration_folder=self.path("calib"),
            samples=10 if static else None,
            report_path=self.path(out + ".json") if report else None,
        )


def write_project(root) -> Project:
    """Write the tiny project (torch is imported here only)."""
    import torch

    root = str(root)
    os.makedirs(os.path.join(root, "calib"), exist_ok=True)
    with open(os.path.join(root, "model.py"), "w", encoding="utf-8") as f:
        f.write(MODEL_SCRIPT)
    g = torch.Generator().manual_seed(0)
    state = {
        "fc1.weight": torch.randn(16, 16, generator=g) * 0.3,
        "fc1.bias": torch.randn(16, generator=g),
        "fc2.weight": torch.randn(4, 16, generator=g) * 0.3,
        "fc2.bias": torch.randn(4, generator=g),
    }
    torch.save(state, os.path.join(root, "ckpt.pt"))
    for i in range(10):
        torch.save(torch.randn(4, 16, generator=g), os.path.join(root, "calib", f"x{i}.pt"))
    return Project(root)


@pytest.fixture
def project(tmp_path) -> Project:
    return write_project(tmp_path)


def full_job(folder: str, outside: str) -> Job:
    """A job with every field set to a non-default value, paths inside and outside ``folder``."""
    config = QuantConfig(
        dtype="int8",
        mode="static",
        scheme="asymmetric",
        granularity="per-tensor",
        group_size=64,
        observer="percentile",
        include_types=["Linear", "Conv2d"],
        exclude_types=["Embedding"],
        include=["enc.*"],
        exclude=["head.*", 'we"ird\\name'],
        layers=["enc.0", "enc.1"],
        on_failure="warn",
        min_output_sqnr_db=31.5,
        percentile=99.5,
        moving_average_constant=0.05,
        histogram_bins=512,
        histogram_method="entropy",
        warn_layer_sqnr_db=18.25,
        layer_overrides={
            "head.*": {"dtype": "int4", "mode": "weight-only", "granularity": "per-group", "group_size": 32},
            "re:enc\\.[0-9]+": {"dtype": "float"},
            "enc.0": {"dtype": "fp16"},
        },
        target_output_sqnr_db=35.0,
        target_metric_drop=0.01,
        fallback="bf16",
    )
    return Job(
        script=os.path.join(folder, "models", "net.py"),
        output=os.path.join(folder, "out", "q.pt"),
        entry="build_model",
        checkpoint=os.path.join(outside, "ckpt.safetensors"),
        strict=False,
        entry_kwargs={
            "width": 8,
            "name": 'a "q"\\ \n\ttab \x01 é ✓',
            "scale": 0.1,
            "flags": [True, False],
            "nested": {"key with space": [1, 2.5, "x"]},
        },
        config=config,
        calibration_folder=os.path.join(folder, "calib data"),
        samples=12,
        seed=3,
        skip_unusable=True,
        report_path=os.path.join(outside, "report.json"),
        metric="top1",
    )


def test_every_config_field_has_a_job_key():
    """The job file writes every QuantConfig field the GUI can set."""
    keys = {
        config_field(key) for section in CONFIG_SECTIONS for key in SECTIONS[section] if is_config_key(section, key)
    }
    assert keys == {f.name for f in dataclasses.fields(QuantConfig)}


def test_round_trip_through_tomllib(tmp_path):
    """Job -> save -> tomllib -> Job is equal; paths inside the job's folder are written relative."""
    folder, outside = str(tmp_path / "jobs"), str(tmp_path / "elsewhere")
    os.makedirs(folder)
    job = full_job(folder, outside)
    path = os.path.join(folder, "job.toml")
    job.save(path)
    data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    assert data["model"]["script"] == "models/net.py"
    assert data["calibration"]["folder"] == "calib data"
    assert data["model"]["checkpoint"] == os.path.join(outside, "ckpt.safetensors")
    assert data["model"]["entry_kwargs"] == job.entry_kwargs
    assert data["quantization"]["exclude"] == ["head.*", 'we"ird\\name']
    assert data["quantization"]["overrides"] == job.config.layer_overrides
    assert data["validation"]["metric"] == "top1" and data["validation"]["target_metric_drop"] == 0.01
    text = Path(path).read_text(encoding="utf-8")
    assert '[quantization.overrides]\n"head.*" = { dtype = "int4", mode = "weight-only",' in text
    loaded = load_job(path)
    assert loaded == job
    assert Job.from_toml(job.to_toml(), folder) == job  # without relative_to: absolute paths


def test_defaults_round_trip_keep_none_and_empty_lists_apart(tmp_path):
    """include_types None (all types) and layers None are left out; [] is written and read back."""
    job = Job(script=str(tmp_path / "m.py"), output=str(tmp_path / "o.safetensors"))
    text = job.to_toml(tmp_path)
    data = tomllib.loads(text)
    assert "include_types" not in data["quantization"] and "layers" not in data["quantization"]
    assert "min_output_sqnr_db" not in data["validation"]
    assert parse_job(text, tmp_path) == job
    empty = job.replace(config=QuantConfig(include_types=[], layers=[]))
    assert parse_job(empty.to_toml(tmp_path), tmp_path) == empty
    assert parse_job(empty.to_toml(tmp_path), tmp_path).config.layers == []


@pytest.mark.parametrize(
    "text",
    [
        "",
        "plain",
        'quote " and \\ backslash',
        "new\nline\r\n",
        "\t\b\f\x00\x1f\x7f",
        "é ✓ 𝄞",
        "'''",
        '"""',
        "\\u0041",
    ],
)
def test_toml_string_reads_back_exactly(text):
    assert tomllib.loads(f"v = {toml_string(text)}")["v"] == text


def test_toml_values_read_back_exactly():
    values = {
        "i": -7,
        "f": 1e-5,
        "g": 123456789.125,
        "t": True,
        "inf": math.inf,
        "l": [1, "a", [2.0]],
        "d": {"a-b": 1, "c d": {"e": []}},
        "e": {},
    }
    text = "\n".join(f"{k} = {toml_value(v)}" for k, v in values.items())
    assert tomllib.loads(text) == values


def test_values_toml_cannot_hold_are_refused_when_written(tmp_path):
    job = Job(script="m.py", output="o.pt", entry_kwargs={"x": [None]})  # fine to run
    with pytest.raises(ConfigError, match=r"^\[model\] entry_kwargs.x\[0\]: a null value cannot be"):
        job.save(tmp_path / "job.toml")
    assert os.listdir(tmp_path) == []


def test_save_into_a_missing_folder_names_the_file(tmp_path):
    target = tmp_path / "missing" / "job.toml"
    with pytest.raises(ConfigError, match=rf"{target}: cannot write the file: No such file"):
        Job(script="m.py", output="o.pt").save(target)
    assert os.listdir(tmp_path) == []


def test_dashed_keys_and_relative_paths(tmp_path):
    """Dashed keys are accepted; relative paths are relative to the job file, not the cwd."""
    (tmp_path / "sub").mkdir()
    path = tmp_path / "sub" / "job.toml"
    path.write_text(
        '[model]\nscript = "../m.py"\nentry-kwargs = { width = 4 }\n'
        '[quantization]\ngroup-size = 32\ngranularity = "per_group"\nmode = "weight-only"\n'
        'include-types = "Linear"\npercentile = 99\n'
        '[validation]\non-failure = "IGNORE"\nmin-output-sqnr-db = 20\n'
        '[output]\npath = "out/q.safetensors"\n',
        encoding="utf-8",
    )
    job = load_job(path)
    assert job.script == str(tmp_path / "m.py")
    assert job.output == str(tmp_path / "sub" / "out" / "q.safetensors")
    assert job.entry_kwargs == {"width": 4}
    assert (job.config.group_size, job.config.granularity) == (32, "per-group")
    assert job.config.include_types == ["Linear"]
    assert job.config.on_failure == "ignore"
    assert job.config.min_output_sqnr_db == 20.0 and isinstance(job.config.min_output_sqnr_db, float)
    assert job.config.percentile == 99.0 and isinstance(job.config.percentile, float)


MINIMAL = '[model]\nscript = "m.py"\n[output]\npath = "o.safetensors"\n'


@pytest.mark.parametrize(
    "text, expected",
    [
        (MINIMAL + "[modle]\n", r"\[modle\]: unknown section; a job file has the sections \[model\]"),
        ('script = "m.py"\n' + MINIMAL, r"script: keys belong inside a section \(\[model\]"),
        (
            MINIMAL.replace("[model]\n", "[model]\nscrpt = 1\n"),
            r"\[model\] scrpt: unknown key; \[model\] takes script, entry, entry_kwargs",
        ),
        (
            MINIMAL + "[calibration]\nfolder = 'c'\nsamples = 'ten'\n",
            r"\[calibration\] samples: must be an integer, got string 'ten'",
        ),
        (
            MINIMAL + "[quantization]\ndtype = 'int3'\n",
            r"\[quantization\] dtype: 'int3' is not allowed; choose one of int8, int4, fp16, bf16",
        ),
        (
            MINIMAL + "[quantization]\ndtype = 8\n",
            r"\[quantization\] dtype: must be one of int8, int4, fp16, bf16, got integer 8",
        ),
        (MINIMAL + "[quantization]\ninclude = [1]\n", r"\[quantization\] include: must be a list of strings"),
        (
            MINIMAL + "[validation]\non_failure = 'explode'\n",
            r"\[validation\] on_failure: 'explode' is not allowed; choose one of error, warn, ignore",
        ),
        (
            MINIMAL + "[validation]\nmin_output_sqnr_db = true\n",
            r"\[validation\] min_output_sqnr_db: must be a number, got boolean True",
        ),
        (
            MINIMAL + "[quantization]\ngroup_size = 2\ngroup-size = 4\n",
            r"\[quantization\] group_size: given twice \(as group_size and group-size\)",
        ),
        (
            MINIMAL + "[quantization]\nmode = 'static'\n",
            r"\[calibration\] folder: mode static needs a calibration folder",
        ),
        (MINIMAL + "[calibration]\nsamples = 4\n", r"\[calibration\] samples: given without a calibration folder"),
        (MINIMAL + "[calibration]\nfolder = 'c'\nsamples = 0\n", r"\[calibration\] samples: 0 must be an integer >= 1"),
        ('[output]\npath = "o.pt"\n', r"\[model\] script: missing"),
        ('[model]\nscript = "m.py"\n', r"\[output\] path: missing"),
        (MINIMAL.replace("o.safetensors", "o.onnx"), r"\[output\] path: .*must end in .safetensors, .pt, .pth"),
        (MINIMAL + "[model]\n", r"not valid TOML"),
        (MINIMAL.replace('"m.py"', '""'), r"\[model\] script: is empty"),
        (
            MINIMAL + '[quantization.overrides]\n"head.*" = { dtype = "int3" }\n',
            r'\[quantization.overrides\] "head.\*": dtype \'int3\' is not allowed; choose one of int8, .*, float',
        ),
        (
            MINIMAL + '[quantization.overrides]\n"head.*" = { bits = 4 }\n',
            r'\[quantization.overrides\] "head.\*": \'bits\' cannot be set per layer; use dtype, mode',
        ),
        (
            MINIMAL + '[quantization.overrides]\n"head.*" = "int8"\n',
            r'\[quantization.overrides\] "head.\*": must be an inline table of dtype, mode',
        ),
        (
            MINIMAL + '[quantization.overrides]\nfc = { group_size = "8" }\n',
            r"\[quantization.overrides\] fc: group_size must be an integer, got string '8'",
        ),
        (
            MINIMAL + '[quantization.overrides]\n"re:(" = { dtype = "fp16" }\n',
            r'\[quantization.overrides\] "re:\(": pattern .* not a valid regular expression',
        ),
        (
            MINIMAL + "[quantization]\noverrides = 3\n",
            r"\[quantization\] overrides: must be a table of \"pattern\" = \{ field = value \}, got integer 3",
        ),
        (
            MINIMAL + "[quantization]\nfallback = 'int4'\n",
            r"\[quantization\] fallback: 'int4' is not allowed; choose one of float, int8, fp16, bf16",
        ),
        (
            MINIMAL + "[quantization]\nfallback = 'int8'\n",
            r"\[quantization\] fallback: int8 is not wider than dtype int8",
        ),
        (
            MINIMAL + "[validation]\ntarget_output_sqnr_db = 'high'\n",
            r"\[validation\] target_output_sqnr_db: must be a number, got string 'high'",
        ),
        (MINIMAL + "[validation]\nmetric = 1\n", r"\[validation\] metric: must be a string, got integer 1"),
        (
            MINIMAL + "[validation]\nmetric = 'top 1'\n",
            r"\[validation\] metric: 'top 1' is not the name of a function in the script",
        ),
        (
            MINIMAL + "[model.entry_kwargs]\nwhen = 2024-01-01\n",
            r"\[model\] entry_kwargs.when: dates and times are not supported here",
        ),
    ],
)
def test_errors_name_file_section_and_key(tmp_path, text, expected):
    path = tmp_path / "bad.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError, match=expected) as info:
        load_job(path)
    assert str(info.value).startswith(f"{path}: ")


def test_job_errors_keep_section_key_and_problem(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text(MINIMAL + "[quantization]\ngroup_size = 3\n", encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_job(path)
    error = info.value
    assert (error.section, error.key, error.problem) == ("quantization", "group_size", "3 must be an even integer >= 2")
    assert str(error) == f"{path}: [quantization] group_size: 3 must be an even integer >= 2"


def test_validation_failed_declares_report_and_result():
    bare = ValidationFailed("validation failed: x")
    assert bare.report is None and bare.result is None


def test_missing_and_unreadable_job_files(tmp_path):
    with pytest.raises(ConfigError, match=r"nope.toml: no such job file"):
        load_job(tmp_path / "nope.toml")
    (tmp_path / "bin.toml").write_bytes(b"\xff\xfe\x00")
    with pytest.raises(ConfigError, match=r"bin.toml: not a UTF-8 text file"):
        load_job(tmp_path / "bin.toml")


def test_jobs_import_without_torch():
    code = (
        "import sys, mono_quant_core.jobs, mono_quant_core.cli.main\n"
        "assert 'torch' not in sys.modules, 'torch imported'\nprint('ok')"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


# -- run_job end to end ----------------------------------------------------------------------


def test_run_job_writes_output_and_report(project):
    """A static job: output file, report JSON with file_bytes equal to the file's size, progress."""
    job = project.job(mode="static", observer="minmax", report=True)
    seen: list[tuple[int, int, str]] = []
    layers: list[str] = []
    outcome = run_job(
        job, progress=lambda d, t, m: seen.append((d, t, m)), on_layer=lambda layer: layers.append(layer.name)
    )
    assert os.path.getsize(job.output) == outcome.file_bytes
    report = json.loads(Path(job.report_path).read_text(encoding="utf-8"))
    assert report["file_bytes"] == outcome.file_bytes
    assert report["calibration_samples"] == outcome.report.calibration_samples > 0
    assert layers == ["fc1", "fc2"]
    assert seen[0] == (0, 0, "loading model.py")
    assert seen[-1][0] == seen[-1][1] > 0 and seen[-1][2] == f"saving {os.path.basename(job.output)}"


def test_run_job_failed_validation_writes_report_not_output(project):
    job = project.job(min_output_sqnr_db=200.0, report=True)
    with pytest.raises(ValidationFailed, match="below min_output_sqnr_db 200 dB") as info:
        run_job(job)
    assert info.value.result is not None and info.value.result.report is info.value.report
    assert not os.path.exists(job.output)
    report = json.loads(Path(job.report_path).read_text(encoding="utf-8"))
    assert report["passed"] is False and report["failures"]


def test_run_job_missing_script_and_cancel(project, tmp_path):
    with pytest.raises(ScriptError, match=r"gone.py: no such model script"):
        run_job(project.job().replace(script=str(tmp_path / "gone.py")))
    token = CancelToken()
    token.cancel()
    with pytest.raises(Cancelled):
        run_job(project.job(), cancel=token)
    assert not os.path.exists(project.job().output)


def test_run_job_skips_unusable_calibration_files_only_when_told(project):
    """``[calibration] skip_unusable``: a damaged file fails the job before any work, or is left out
    and listed in the report (the window's "Skip files that cannot be used")."""
    with open(project.path("calib", "x3.pt"), "wb") as f:
        f.write(b"not a tensor")
    job = project.job(mode="static")
    with pytest.raises(CalibrationError, match=r"x3\.pt"):
        run_job(job)
    assert not os.path.exists(job.output)
    outcome = run_job(dataclasses.replace(job, skip_unusable=True))
    assert [entry["file"] for entry in outcome.report.calibration_skipped] == ["x3.pt"]
