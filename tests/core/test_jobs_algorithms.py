"""Job files' algorithm keys under ``[quantization]``: read into QuantConfig, written back, and
refused values named by section and key."""

from __future__ import annotations

import pytest

from mono_quant_core.config import QuantConfig
from mono_quant_core.errors import ConfigError
from mono_quant_core.jobs import Job

HEAD = '[model]\nscript = "m.py"\n[output]\npath = "o.safetensors"\n'


def job(quantization: str, calibration: bool = True) -> Job:
    calib = '[calibration]\nfolder = "calib"\n' if calibration else ""
    return Job.from_toml(HEAD + calib + "[quantization]\n" + quantization, base_dir="/tmp/project")


def test_algorithm_keys_are_read_and_written_back():
    j = job(
        'dtype = "int4"\nmode = "weight-only"\ngranularity = "per-group"\ngroup_size = 32\n'
        'algorithm = "gptq"\ngptq_damp = 0.02\ngptq-act-order = true\ngptq_block_size = 32\n'
        "bias_correction = true\n"
    )
    c = j.config
    assert (c.algorithm, c.gptq_damp, c.gptq_act_order, c.gptq_block_size, c.bias_correction) == (
        "gptq", 0.02, True, 32, True,
    )  # fmt: skip
    text = j.to_toml(relative_to="/tmp/project")
    assert 'algorithm = "gptq"' in text and "gptq_damp = 0.02" in text and "gptq_act_order = true" in text
    assert "smoothquant_alpha" not in text  # None: off, and TOML has no null
    assert Job.from_toml(text, base_dir="/tmp/project").config == c
    s = job('mode = "static"\nsmoothquant_alpha = 1\nhqq_iterations = 3\n').config
    assert (s.smoothquant_alpha, s.hqq_iterations, s.algorithm) == (1.0, 3, "rtn")


def test_a_default_job_writes_rtn_and_reads_back_equal():
    j = Job(script="/tmp/m.py", output="/tmp/o.safetensors", config=QuantConfig())
    text = j.to_toml()
    assert 'algorithm = "rtn"' in text and "bias_correction = false" in text
    assert Job.from_toml(text).config == QuantConfig()


@pytest.mark.parametrize(
    ("quantization", "calibration", "message"),
    [
        ('algorithm = "awq"\n', True, "[quantization] algorithm: 'awq' is not allowed"),
        ("algorithm = 3\n", True, "[quantization] algorithm: must be one of rtn, gptq, hqq"),
        ("gptq_damp = -0.1\n", True, "[quantization] gptq_damp: -0.1 must be a number > 0"),
        ('gptq_act_order = "yes"\n', True, "[quantization] gptq_act_order: must be true or false"),
        ("gptq_block_size = 0\n", True, "[quantization] gptq_block_size: 0 must be an integer >= 1"),
        ("hqq_iterations = 2.5\n", True, "[quantization] hqq_iterations: must be an integer"),
        ("smoothquant_alpha = 0\n", True, "[quantization] smoothquant_alpha: 0.0 must be in (0, 1]"),
        ('algorithm = "gptq"\n', True, "[quantization] algorithm: gptq: GPTQ needs mode weight-only"),
        (
            'mode = "weight-only"\nalgorithm = "gptq"\n',
            False,
            "[quantization] algorithm: GPTQ needs a calibration folder",
        ),
        ("smoothquant_alpha = 0.5\n", False, "[quantization] smoothquant_alpha: SmoothQuant needs a calibration"),
        (
            'mode = "weight-only"\nbias_correction = true\n',
            False,
            "[quantization] bias_correction: bias correction needs a calibration",
        ),
    ],
)
def test_refused_values_name_the_key(quantization, calibration, message):
    with pytest.raises(ConfigError) as exc:
        job(quantization, calibration)
    assert str(exc.value).startswith("job: " + message), str(exc.value)
