"""``mono-quant export``: a quantized file written as compressed-tensors (checked by the library) and ONNX
(checked by onnx.checker and run by ONNX Runtime), in-process via main(); the error paths exit 2."""

from __future__ import annotations

import importlib.util
import json
import os
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from test_export_compressed_tensors import decompress_with_library
from test_jobs import Project, write_project

from mono_quant_core import open_quantized
from mono_quant_core.cli import cmd_export
from mono_quant_core.cli.main import main
from mono_quant_core.modules.base import QuantizedModule
from mono_quant_core.serialization import dequantize
from mono_quant_core.tensor import sqnr_db

STATIC_INT8 = ["--calib", "calib", "--samples", "8", "--mode", "static"]
DYNAMIC_INT8: list[str] = []  # quantize's defaults: int8 per-channel symmetric, dynamic activations
INT4_G8 = ["--dtype", "int4", "--mode", "weight-only", "--granularity", "per-group", "--group-size", "8"]


@pytest.fixture
def project(tmp_path, monkeypatch) -> Project:
    """The tiny project of test_jobs (a 16-16-4 MLP, its checkpoint, 10 calibration tensors), as the cwd."""
    monkeypatch.chdir(tmp_path)
    return write_project(tmp_path)


def quantized_file(p: Project, name: str, flags: list[str], capsys) -> str:
    """``mono-quant quantize`` the project's model with ``flags`` into ``name``."""
    argv = ["quantize", "--script", "model.py", "--checkpoint", "ckpt.pt", *flags, "--out", name]
    assert main(argv) == 0, capsys.readouterr().err
    capsys.readouterr()
    return p.path(name)


def export(file: str, *flags: str) -> list[str]:
    return ["export", file, "--script", "model.py", *flags]


def warnings(err: str) -> list[str]:
    return [line.removeprefix("mono-quant: warning: ") for line in err.splitlines() if "warning:" in line]


@pytest.mark.parametrize(
    "flags, fmt, problems",
    [(STATIC_INT8, "int-quantized", 0), (INT4_G8, "pack-quantized", 2)],
    ids=["int8-static", "int4-g8"],
)
def test_compressed_tensors_folder_decompresses_to_our_weights(project, capsys, flags, fmt, problems):
    """The folder's config and tensors; compressed-tensors decompresses every layer to exactly our
    dequantized weight (max |Δ| = 0); the pre-export problems (vLLM's group sizes) are warnings."""
    q = quantized_file(project, "q.safetensors", flags, capsys)
    assert main(export("q.safetensors", "--to", "compressed_tensors", "--out", "ct/")) == 0
    out, err = capsys.readouterr()
    folder = project.path("ct")
    files = sorted(os.listdir(folder))
    assert files == ["config.json", "model.safetensors", "mono_quant_export.json"]
    size = sum(os.path.getsize(os.path.join(folder, f)) for f in files)
    from mono_quant_core.report import human_bytes

    assert out == (
        f"wrote ct (compressed-tensors folder, 3 files, {human_bytes(size)}; "
        "from q.safetensors, 2 layers quantized, 0 written float)\n"
    )
    found = warnings(err)
    assert len(found) == problems and all("vLLM" in w and "group sizes 32, 64 and 128" in w for w in found), err
    qconfig = json.loads(Path(folder, "config.json").read_text(encoding="utf-8"))["quantization_config"]
    assert (qconfig["quant_method"], qconfig["format"], qconfig["quantization_status"]) == (
        "compressed-tensors",
        fmt,
        "compressed",
    )
    result = open_quantized(q, "model.py")
    weights = decompress_with_library(dequantize(result.model), Path(folder))
    layers = {n: m for n, m in result.model.named_modules() if isinstance(m, QuantizedModule)}
    assert set(weights) == set(layers) == {"fc1", "fc2"}
    for name, module in layers.items():
        ours = module.dequantized_weight()
        assert torch.equal(weights[name], ours), f"{name}: max |Δ| = {(weights[name] - ours).abs().max()}"


def test_strict_stops_on_problems_and_writes_nothing(project, capsys):
    quantized_file(project, "q4.safetensors", INT4_G8, capsys)
    assert main(export("q4.safetensors", "--to", "compressed-tensors", "--strict", "--out", "ct")) == 1
    out, err = capsys.readouterr()
    assert out == "" and len(warnings(err)) == 2
    assert err.splitlines()[-1] == (
        "mono-quant: error: q4.safetensors: 2 problems for compressed-tensors (listed above); nothing written "
        "to ct (change the settings as they say, or export without --strict)"
    )
    assert not os.path.exists(project.path("ct"))
    quantized_file(project, "q8.safetensors", STATIC_INT8, capsys)  # no problems: --strict exports
    assert main(export("q8.safetensors", "--to", "compressed-tensors", "--strict", "--out", "ct")) == 0
    assert os.path.isfile(project.path("ct", "model.safetensors"))


def test_errors_name_the_file_or_flag_and_exit_2(project, capsys):
    quantized_file(project, "q.safetensors", STATIC_INT8, capsys)
    os.mkdir(project.path("mine"))
    open(project.path("mine", "notes.txt"), "w").close()
    open(project.path("notes.txt"), "w").close()
    ct = ["--to", "compressed-tensors"]
    onnx = ["--to", "onnx", "--example", "calib/x0.pt"]
    cases = [
        (export("q.safetensors", "--to", "onnx", "--out", "m.onnx"), "--example: --to onnx needs an example input"),
        (export("ckpt.pt", *ct, "--out", "ct"), "ckpt.pt: a plain PyTorch file, not written by mono-quant"),
        (export("calib/x0.pt", *onnx, "--out", "m.onnx"), "calib/x0.pt: a plain PyTorch file, not written by"),
        (export("nope.safetensors", *ct, "--out", "ct"), "nope.safetensors: no such file"),
        (export("calib", *ct, "--out", "ct"), "calib: is a folder, not a file"),
        (["export", "q.safetensors", "--script", "nope.py", *ct, "--out", "ct"], "nope.py: no such model script"),
        (export("q.safetensors", *ct, "--out", "missing/ct"), f"missing/ct: the folder {project.path('missing')}"),
        (export("q.safetensors", *onnx, "--out", "ckpt.pt/m.onnx"), "ckpt.pt/m.onnx: the folder"),
        (export("q.safetensors", *ct, "--out", "notes.txt"), "notes.txt: is a file; a compressed-tensors export"),
        (export("q.safetensors", *ct, "--out", "mine"), "mine: the folder is not empty and holds files"),
        (export("q.safetensors", *onnx, "--out", "m.txt"), "--out: m.txt: unknown ONNX model extension"),
        (export("q.safetensors", "--to", "onnx", "--example", "no.pt", "--out", "m.onnx"), "no.pt: no such example"),
        (export("q.safetensors", "--to", "onnx", "--example", "model.py", "--out", "m.onnx"), "model.py: not an"),
        (export("q.safetensors", *ct, "--opset", "17", "--out", "ct"), "--opset: only used with --to onnx"),
        (export("q.safetensors", *ct, "--example", "calib", "--out", "ct"), "--example: only used with --to onnx"),
        (export("q.safetensors", *onnx, "--strict", "--out", "m.onnx"), "--strict: only used with --to compressed"),
        (export("q.safetensors", "--to", "tflite", "--out", "m"), "argument --to: invalid choice: 'tflite'"),
    ]
    for argv, message in cases:
        assert main(argv) == 2, argv
        out, err = capsys.readouterr()
        assert err.splitlines()[-1].startswith(f"mono-quant: error: {message}"), (argv, err)
        assert "Traceback" not in err and out == ""
    assert sorted(os.listdir(project.root)) == sorted(
        ["calib", "ckpt.pt", "mine", "model.py", "notes.txt", "q.safetensors"]
    )
    assert os.listdir(project.path("mine")) == ["notes.txt"]


@pytest.mark.parametrize(
    "target, absent",
    [("onnx", "onnxruntime"), ("compressed-tensors", "compressed_tensors")],
)
def test_a_missing_dependency_names_the_extra(project, capsys, monkeypatch, target, absent):
    """Without the [export] extra (find_spec is None) the command says what to install, before loading anything."""
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == absent else real(name, *a))
    flags = ["--example", "calib/x0.pt", "--out", "m.onnx"] if target == "onnx" else ["--out", "ct"]
    assert main(export("never-read.safetensors", "--to", target, *flags)) == 2
    out, err = capsys.readouterr()
    assert out == "" and err == (
        f"mono-quant: error: --to {target}: needs {absent}, which is not installed; "
        "install the extra: pip install 'mono-quant[export]'\n"
    )
    assert not os.path.exists(project.path("m.onnx")) and not os.path.exists(project.path("ct"))


def test_read_example_takes_a_file_or_the_first_sample_of_a_folder(project, tmp_path):
    """--example reads what calibration files hold: a tensor (.pt, .npy), a dict (.safetensors); a folder
    gives its first sample in natural order; a damaged file is named with the flag."""
    first = torch.load(project.path("calib", "x0.pt"), weights_only=True)
    assert torch.equal(cmd_export.read_example("calib"), first)
    assert torch.equal(cmd_export.read_example("calib/x3.pt"), torch.load("calib/x3.pt", weights_only=True))
    np.save(tmp_path / "a.npy", first.numpy())
    assert torch.equal(cmd_export.read_example(str(tmp_path / "a.npy")), first)
    save_file({"x": first, "mask": torch.ones(4, 16)}, tmp_path / "d.safetensors")
    batch = cmd_export.read_example(str(tmp_path / "d.safetensors"))
    assert set(batch) == {"x", "mask"} and torch.equal(batch["x"], first)
    (tmp_path / "bad.pt").write_bytes(b"not a torch file")
    from mono_quant_core.errors import CalibrationError

    with pytest.raises(CalibrationError, match=r"^--example .*bad\.pt: unreadable"):
        cmd_export.read_example(str(tmp_path / "bad.pt"))


def test_help_shows_the_examples(capsys):
    assert main(["export", "--help"]) == 0
    out = capsys.readouterr().out
    assert "examples:\n  mono-quant export " in out and "exit status: 0" in out
    assert main(["--help"]) == 0
    assert "mono-quant export model.int8.safetensors --script model.py --to onnx" in capsys.readouterr().out


class FakeOnnxExporter:
    """Stands in for ``mono_quant_core.export.onnx_qdq``: records each call, writes a stub or raises."""

    def __init__(self, error: Exception | None = None) -> None:
        self.calls: list[dict] = []
        self.error = error

    def export_onnx(self, qmodel_or_result, example, path, opset=None, dynamic_batch=True):
        self.calls.append({"result": qmodel_or_result, "example": example, "opset": opset, "dynamic": dynamic_batch})
        if self.error is not None:
            raise self.error
        Path(path).write_bytes(b"\0" * 1000)
        return types.SimpleNamespace(opset=opset or 17, layers=["fc1", "fc2"])


def fake_exporter(monkeypatch, error: Exception | None = None) -> FakeOnnxExporter:
    fake = FakeOnnxExporter(error)
    module = types.ModuleType("mono_quant_core.export.onnx_qdq")
    module.export_onnx = fake.export_onnx  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "mono_quant_core.export.onnx_qdq", module)
    return fake


def test_onnx_flags_reach_export_onnx_and_its_error_exits_2(project, capsys, monkeypatch):
    """What the command hands export_onnx (the file's QuantResult, the example, --opset, --static-batch),
    its summary line, and an ExportError naming a layer: exit 2 with that message."""
    from mono_quant_core.errors import ExportError
    from mono_quant_core.quantizer import QuantResult

    quantized_file(project, "q.safetensors", STATIC_INT8, capsys)
    fake = fake_exporter(monkeypatch)
    assert main(export("q.safetensors", "--to", "onnx", "--example", "calib/x3.pt", "--out", "m.onnx")) == 0
    assert (
        capsys.readouterr().out == "wrote m.onnx (ONNX QDQ opset 17, 1000 B; from q.safetensors, 2 quantized layers)\n"
    )
    argv = export("q.safetensors", "--to", "onnx", "--example", "calib", "--opset", "21", "--static-batch")
    assert main([*argv, "--out", "m2.onnx"]) == 0
    first, second = fake.calls
    assert isinstance(first["result"], QuantResult) and [r.name for r in first["result"].report.layers] == [
        "fc1",
        "fc2",
    ]
    assert torch.equal(first["example"], torch.load("calib/x3.pt", weights_only=True))
    assert (first["opset"], first["dynamic"]) == (None, True)
    assert torch.equal(second["example"], torch.load("calib/x0.pt", weights_only=True))
    assert (second["opset"], second["dynamic"]) == (21, False)
    capsys.readouterr()
    message = "fc2: a quantized Linear with an odd kernel: not expressible in ONNX QDQ"
    fake_exporter(monkeypatch, ExportError(message, ["fc2"]))
    assert main(export("q.safetensors", "--to", "onnx", "--example", "calib", "--out", "m3.onnx")) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.splitlines()[-1] == f"mono-quant: error: {message}"
    assert not os.path.exists(project.path("m3.onnx"))


# -- ONNX: the exported graph passes onnx.checker and ONNX Runtime runs it ---------------------------
def run_onnx(path: str, x: torch.Tensor) -> torch.Tensor:
    import onnxruntime as ort

    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    (inp,) = session.get_inputs()
    (y,) = session.run(None, {inp.name: x.numpy()})
    return torch.from_numpy(y)


@pytest.mark.parametrize("flags", [STATIC_INT8, DYNAMIC_INT8, INT4_G8], ids=["int8-static", "int8-dynamic", "int4-g8"])
def test_onnx_model_passes_the_checker_and_runs_in_onnx_runtime(project, capsys, flags):
    """export --to onnx --example calib/x0.pt: onnx.checker passes; ONNX Runtime's output matches the mono-quant
    model's (SQNR >= 35 dB int8, >= 25 dB int4, the issue's thresholds) on a sample and, with the default
    dynamic batch, on a batch of another size."""
    import onnx

    q = quantized_file(project, "q.safetensors", flags, capsys)
    assert main(export("q.safetensors", "--to", "onnx", "--example", "calib/x0.pt", "--out", "m.onnx")) == 0
    out, _ = capsys.readouterr()
    from mono_quant_core.report import human_bytes

    size = os.path.getsize(project.path("m.onnx"))
    opset = 21 if flags is INT4_G8 else 17  # blocked DequantizeLinear for int4 groups, else the default
    assert (
        out == f"wrote m.onnx (ONNX QDQ opset {opset}, {human_bytes(size)}; from q.safetensors, 2 quantized layers)\n"
    )
    onnx.checker.check_model(project.path("m.onnx"), full_check=True)
    model = open_quantized(q, "model.py").model.eval()
    threshold = 25.0 if flags is INT4_G8 else 35.0
    x0 = torch.load("calib/x0.pt", weights_only=True)
    wide = torch.cat([torch.load(f"calib/x{i}.pt", weights_only=True) for i in (1, 2)])[:7]
    for x in (x0, wide):
        with torch.no_grad():
            ours = model(x)
        theirs = run_onnx(project.path("m.onnx"), x)
        assert theirs.shape == ours.shape
        assert sqnr_db(ours, theirs) >= threshold, f"SQNR {sqnr_db(ours, theirs):.1f} dB"


def test_onnx_opset_and_static_batch_reach_the_exporter(project, capsys):
    """--example DIR (its first sample), --opset 21 and --static-batch: the graph's opset and fixed batch dim."""
    import onnx

    quantized_file(project, "q.safetensors", STATIC_INT8, capsys)
    argv = export("q.safetensors", "--to", "onnx", "--example", "calib", "--opset", "21", "--static-batch")
    assert main([*argv, "--out", "fixed.onnx"]) == 0, capsys.readouterr().err
    assert main(export("q.safetensors", "--to", "onnx", "--example", "calib", "--out", "dyn.onnx")) == 0
    fixed, dyn = (onnx.load(project.path(f"{n}.onnx")) for n in ("fixed", "dyn"))
    assert {o.domain: o.version for o in fixed.opset_import}.get("", 0) == 21
    (fixed_in,), (dyn_in,) = fixed.graph.input, dyn.graph.input
    assert [d.dim_value for d in fixed_in.type.tensor_type.shape.dim] == [4, 16]
    batch = dyn_in.type.tensor_type.shape.dim[0]
    assert batch.dim_param and not batch.dim_value, batch
