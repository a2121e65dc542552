"""QuantConfig.device: which device a run computes on, decided once when it starts (issue 16).

This machine has no GPU: the CUDA path itself is checked by bench/bench_cuda.py on one; here the
choice of device, its errors, the CPU path, the report's record, the CLI flag and the job key.
"""

from __future__ import annotations

import pytest
import torch
from zoo import make

from mono_quant_core import ConfigError, QuantConfig, quantize
from mono_quant_core.devices import available_devices, resolve_device
from mono_quant_core.jobs import Job


@pytest.mark.parametrize(
    ("name", "count", "expected"),
    [
        ("auto", 0, "cpu"),
        ("auto", 2, "cuda:0"),
        ("cpu", 2, "cpu"),
        ("cuda", 1, "cuda:0"),
        ("cuda:1", 2, "cuda:1"),
    ],
)
def test_resolve_device(name, count, expected):
    assert resolve_device(name, cuda_count=count) == torch.device(expected)


def test_cuda_without_a_gpu_or_a_missing_index_is_a_clear_error():
    with pytest.raises(ConfigError, match=r"^device: 'cuda' needs a CUDA GPU, and this PyTorch .* sees none") as e:
        resolve_device("cuda", cuda_count=0)
    assert e.value.key == "device"
    with pytest.raises(
        ConfigError, match=r"^device: 'cuda:2' is not here: this machine has 2 CUDA device\(s\), cuda:0, cuda:1"
    ):
        resolve_device("cuda:2", cuda_count=2)
    assert available_devices(cuda_count=2) == ["cpu", "cuda:0", "cuda:1"]


@pytest.mark.parametrize("bad", ["gpu", "cuda:", "cuda:x", "CPU0", 3])
def test_config_refuses_what_is_not_a_device(bad):
    with pytest.raises(ConfigError, match=r"^device: .* is not a device; choose auto, cpu, cuda or cuda:N"):
        QuantConfig(device=bad)


def test_a_run_records_its_device_and_refuses_a_missing_gpu(monkeypatch):
    model, data = make("mlp")
    for device in ("auto", "cpu"):
        result = quantize(model, QuantConfig(device=device), calibration=data)
        assert result.report.device == "cpu"
        assert result.report.to_dict()["device"] == "cpu"
        assert all(t.device.type == "cpu" for t in result.model.state_dict().values())
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ConfigError, match="needs a CUDA GPU"):
        quantize(model, QuantConfig(device="cuda"), calibration=data)
    assert resolve_device("auto") == torch.device("cpu")


def test_the_cli_flag_and_the_job_key(tmp_path, monkeypatch, capsys):
    from mono_quant_core.cli.main import main

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    script = tmp_path / "m.py"
    script.write_text("from torch import nn\n\ndef build_model():\n    return nn.Sequential(nn.Linear(8, 4))\n")
    out = tmp_path / "m.safetensors"
    report = tmp_path / "r.json"
    args = ["quantize", "--script", str(script), "--out", str(out)]
    assert main([*args, "--device", "cpu", "--report", str(report)]) == 0
    assert '"device": "cpu"' in report.read_text()
    assert main([*args, "--device", "cuda"]) == 2
    assert "device: 'cuda' needs a CUDA GPU" in capsys.readouterr().err
    assert main([*args, "--device", "tpu"]) == 2
    assert "--device: 'tpu' is not a device" in capsys.readouterr().err
    text = f'[model]\nscript = "{script}"\n[quantization]\ndevice = "cpu"\n[output]\npath = "{out}"\n'
    assert Job.from_toml(text).config.device == "cpu"
    with pytest.raises(ConfigError, match="device"):
        Job.from_toml(text.replace('device = "cpu"', 'device = "gpu"'))
