"""ONNX QDQ export: onnx.checker accepts the graph, ONNX Runtime (CPU) runs it, and its outputs match the
mono-quant model's (SQNR >= 35 dB for int8, >= 25 dB for int4) at another batch size than the example's."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto
from torch import nn
from zoo import assert_unchanged, make, snapshot

from mono_quant_core import QuantConfig, open_quantized, quantize, save_quantized
from mono_quant_core.errors import ExportError
from mono_quant_core.export import onnx_qdq
from mono_quant_core.export.onnx_qdq import export_onnx
from mono_quant_core.modules import QuantizedMultiheadAttention
from mono_quant_core.modules.base import QuantizedModule
from mono_quant_core.tensor import sqnr_db

INT8_DB, INT4_DB = 35.0, 25.0


class Attention(nn.Module):
    """torch's own transformer layer (nn.MultiheadAttention inside) and a head."""

    def __init__(self) -> None:
        super().__init__()
        self.enc = nn.TransformerEncoderLayer(32, 4, 64, batch_first=True, dropout=0.0)
        self.head = nn.Linear(32, 5)

    def forward(self, x):
        return self.head(self.enc(x))


class Convs(nn.Module):
    """Conv1d into ConvTranspose2d (per-channel scales on axis 1 of its weight)."""

    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv1d(4, 8, 3, padding=1)
        self.up = nn.ConvTranspose2d(8, 6, 4, stride=2, padding=1)

    def forward(self, x):
        return self.up(torch.relu(self.c1(x)).unsqueeze(-1).expand(-1, -1, -1, 8))


class ThreeConvs(nn.Module):
    """Conv3d, a reflect-padded Conv2d and a ConvTranspose1d, with three inputs and three outputs."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv3d(2, 4, 3, padding=1)
        self.b = nn.Conv2d(3, 5, 3, padding=1, padding_mode="reflect")
        self.c = nn.ConvTranspose1d(4, 3, 3, stride=2)

    def forward(self, x, y, z):
        return self.a(x), self.b(y), self.c(z)


class TwoInputs(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(16, 8)
        self.gate = nn.Linear(16, 8)

    def forward(self, x, mask):
        return self.fc(x) * torch.sigmoid(self.gate(mask))


def model_and_batches(name: str):
    g = torch.Generator().manual_seed(5)
    torch.manual_seed(0)
    if name == "attention":
        return Attention().eval(), [torch.randn(3, 10, 32, generator=g) for _ in range(8)]
    if name == "convs":
        return Convs().eval(), [torch.randn(2, 4, 16, generator=g) for _ in range(8)]
    return make(name)


INT4_G32 = {"dtype": "int4", "mode": "weight-only", "granularity": "per-group", "group_size": 32}
INT4_G128_ASYM = {**INT4_G32, "group_size": 128, "scheme": "asymmetric"}
CASES = [
    ("mlp", {"mode": "weight-only"}, INT8_DB),
    ("mlp", {"mode": "dynamic"}, INT8_DB),
    ("mlp", {"mode": "static"}, INT8_DB),
    ("mlp", {"mode": "static", "scheme": "asymmetric"}, INT8_DB),
    ("mlp", {"mode": "weight-only", "granularity": "per-tensor", "scheme": "asymmetric"}, INT8_DB),
    ("mlp", {"mode": "weight-only", "granularity": "per-group", "group_size": 32}, INT8_DB),  # blocked int8
    ("mlp", {"mode": "static", "smoothquant_alpha": 0.5}, INT8_DB),  # stored input_smoothing: x / s first
    ("mlp", INT4_G32, INT4_DB),
    ("mlp", INT4_G128_ASYM, INT4_DB),  # 64 inputs: one short group per row of the first layer
    ("mlp", {"dtype": "fp16"}, INT8_DB),
    ("mlp", {"dtype": "bf16"}, INT8_DB),
    ("cnn", {"mode": "static"}, INT8_DB),
    ("cnn", {"mode": "dynamic"}, INT8_DB),
    ("cnn", INT4_G32, INT4_DB),
    ("transformer", {"mode": "dynamic"}, INT8_DB),  # the embedding table too (weight-only)
    ("transformer", {"mode": "static"}, INT8_DB),
    ("transformer", INT4_G32, INT4_DB),
    ("attention", {"mode": "static"}, INT8_DB),
    ("attention", {"mode": "dynamic"}, INT8_DB),
    ("attention", {**INT4_G32, "group_size": 16}, INT4_DB),
    ("convs", {"mode": "static"}, INT8_DB),
    ("convs", {"mode": "weight-only", "granularity": "per-tensor"}, INT8_DB),
    ("convs", INT4_G32, INT4_DB),
]


def run_onnx(path: str | Path, feeds: dict[str, torch.Tensor]) -> list[np.ndarray]:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {k: v.numpy() for k, v in feeds.items()})


def layers(model: nn.Module) -> dict[str, QuantizedModule]:
    return {
        n: m
        for n, m in model.named_modules()
        if isinstance(m, QuantizedModule) and not isinstance(m, QuantizedMultiheadAttention)
    }


def expected_nodes(model: nn.Module) -> tuple[int, int]:
    """(activation quantizers, DequantizeLinear nodes): one DQ per stored integer weight, a Q/DQ pair
    per layer whose mode quantizes its input (a dynamic convolution rounds each sample with float
    operations instead: no Q/DQ pair)."""
    from mono_quant_core.modules.conv import QuantizedConvNd

    weights = acts = 0
    for m in layers(model).values():
        weights += len(m.weight_shapes) if m.spec is not None else 0
        per_sample = m.mode == "dynamic" and isinstance(m, QuantizedConvNd)
        acts += m.mode in ("static", "dynamic") and m.cast_dtype is None and not per_sample
    return acts, weights + acts


def float32_bytes(model: nn.Module) -> int:
    return sum(t.numel() * 4 for t in model.state_dict().values() if t.dtype == torch.float32)


def check_weights(graph: onnx.GraphProto, model: nn.Module, config: QuantConfig) -> None:
    """Every weight DequantizeLinear reads an integer initializer of the configured kind and layout."""
    inits = {i.name: i for i in graph.initializer}
    weight_dq = [n for n in graph.node if n.op_type == "DequantizeLinear" and n.input[0] in inits]
    kinds = {TensorProto.DataType.Name(inits[n.input[0]].data_type) for n in weight_dq}
    attrs = [{a.name: a.i for a in n.attribute} for n in weight_dq]
    if config.is_cast:
        cast_kind = "FLOAT16" if config.dtype == "fp16" else "BFLOAT16"
        cast_weights = [i for i in graph.initializer if TensorProto.DataType.Name(i.data_type) == cast_kind]
        assert len(cast_weights) >= sum(len(m.weight_shapes) for m in layers(model).values())
        assert not weight_dq
        return
    if config.dtype == "int4":
        assert kinds == {"INT4" if config.scheme == "symmetric" else "UINT4"}
    else:
        assert kinds == {"INT8"}
    for a in attrs:
        if config.granularity == "per-group":
            assert a == {"axis": 1, "block_size": config.group_size}
        elif config.granularity == "per-channel":
            assert set(a) == {"axis"}
        else:
            assert a == {}
    with_zero_point = {len(n.input) == 3 for n in weight_dq}
    assert with_zero_point == {config.scheme == "asymmetric"}


@pytest.mark.parametrize(
    ("name", "settings", "min_db"),
    CASES,
    ids=lambda v: "-".join(map(str, v.values())) if isinstance(v, dict) else str(v),
)
def test_export_runs_in_onnx_runtime_and_matches(tmp_path, name, settings, min_db):
    model, batches = model_and_batches(name)
    config = QuantConfig(**settings)
    result = quantize(model, config, batches, validate=False)
    before, quantized_before = snapshot(model), snapshot(result.model)
    path = tmp_path / "model.onnx"
    out = export_onnx(result, batches[0], path)

    proto = onnx.load(str(path))
    onnx.checker.check_model(proto, full_check=True)
    assert out.file_bytes == os.path.getsize(path) == out.initializer_bytes + out.graph_bytes
    assert sorted(os.listdir(tmp_path)) == ["model.onnx"]
    x = torch.cat(batches[1:3])  # another batch size than the example's: axis 0 is dynamic
    (got,) = run_onnx(path, {out.input_names[0]: x})
    with torch.no_grad():
        ref = result.model(x)
    db = float(sqnr_db(ref, torch.from_numpy(got)))
    print(f"ONNX Runtime vs mono-quant, {name} {settings}: {db:.1f} dB")
    assert db >= min_db, db

    q_nodes, dq_nodes = expected_nodes(result.model)
    assert (out.quantize_nodes, out.dequantize_nodes) == (q_nodes, dq_nodes)
    ops = [n.op_type for n in proto.graph.node]
    quantizer = "QuantizeLinear" if config.mode == "static" else "DynamicQuantizeLinear"
    assert ops.count(quantizer) == q_nodes and ops.count("DequantizeLinear") == dq_nodes
    check_weights(proto.graph, result.model, config)
    blocked = config.dtype == "int4" or config.granularity == "per-group"
    assert out.opset == (21 if blocked else 17) == proto.opset_import[0].version
    # Nothing quantized went in as float: float32 data is at most the model's own float32 tensors
    # (biases, scales, norms), and the file is the quantized bytes plus the graph.
    float_data = sum(onnx_qdq._tensor_bytes(i) for i in proto.graph.initializer if i.data_type == TensorProto.FLOAT)
    assert float_data <= float32_bytes(result.model)
    quantized = result.report.quantized_bytes
    assert abs(out.initializer_bytes - quantized) <= 0.10 * quantized, (out.initializer_bytes, quantized)
    assert out.file_bytes <= 1.10 * (quantized + out.graph_bytes)
    assert_unchanged(model, before)
    assert_unchanged(result.model, quantized_before)


def test_dict_and_tuple_examples_give_named_inputs(tmp_path):
    model = TwoInputs().eval()
    g = torch.Generator().manual_seed(1)
    batches = [{"x": torch.randn(4, 16, generator=g), "mask": torch.randn(4, 16, generator=g)} for _ in range(6)]
    result = quantize(model, QuantConfig(mode="static"), batches, validate=False)
    by_dict = export_onnx(result, batches[0], tmp_path / "dict.onnx")
    by_tuple = export_onnx(result.model, (batches[0]["x"], batches[0]["mask"]), tmp_path / "tuple.onnx")
    feeds = {"x": torch.randn(7, 16, generator=g), "mask": torch.randn(7, 16, generator=g)}
    with torch.no_grad():
        ref = result.model(**feeds)
    for out in (by_dict, by_tuple):
        proto = onnx.load(out.path)
        assert out.input_names == [i.name for i in proto.graph.input] == ["x", "mask"]
        assert out.output_names == [o.name for o in proto.graph.output] == ["output"]
        # The initializers keep the model's own names.
        assert {"fc.weight.codes", "gate.weight.codes"} <= {i.name for i in proto.graph.initializer}
        (got,) = run_onnx(out.path, feeds)
        assert float(sqnr_db(ref, torch.from_numpy(got))) >= INT8_DB
        assert out.quantize_nodes == 2 and out.dequantize_nodes == 4


@pytest.mark.parametrize("mode", ["static", "dynamic"])
def test_several_inputs_and_outputs(tmp_path, mode):
    g = torch.Generator().manual_seed(2)

    def sample(n):
        return (
            torch.randn(n, 2, 4, 4, 4, generator=g),
            torch.randn(n, 3, 6, 6, generator=g),
            torch.randn(n, 4, 7, generator=g),
        )

    torch.manual_seed(0)
    result = quantize(ThreeConvs().eval(), QuantConfig(mode=mode), [sample(2) for _ in range(6)], validate=False)
    out = export_onnx(result, sample(2), tmp_path / "convs.onnx")
    assert out.input_names == ["x", "y", "z"] and out.output_names == ["output_0", "output_1", "output_2"]
    # Static: a Q/DQ pair per input and a DQ per weight; dynamic convolutions round each sample
    # with float operations (no activation Q/DQ).
    assert (out.quantize_nodes, out.dequantize_nodes) == ((3, 6) if mode == "static" else (0, 3))
    feeds = sample(5)
    got = run_onnx(out.path, dict(zip(out.input_names, feeds, strict=True)))
    with torch.no_grad():
        ref = result.model(*feeds)
    for r, o in zip(ref, got, strict=True):
        assert float(sqnr_db(r, torch.from_numpy(o))) >= INT8_DB


@pytest.mark.parametrize(
    "settings", [{"mode": "static", "scheme": "asymmetric"}, INT4_G128_ASYM], ids=["static", "int4"]
)
def test_a_reopened_file_exports_the_same_graph(tmp_path, settings):
    """What the window exports: a result opened from its file gives the same graph as the run's."""
    model, batches = make("cnn")
    result = quantize(model, QuantConfig(**settings), batches, validate=False)
    save_quantized(result, tmp_path / "cnn.safetensors")
    reopened = open_quantized(tmp_path / "cnn.safetensors", model=make("cnn")[0])
    first = export_onnx(result, batches[0], tmp_path / "run.onnx")
    second = export_onnx(reopened, batches[0], tmp_path / "file.onnx")
    a, b = onnx.load(first.path), onnx.load(second.path)
    assert [n.op_type for n in a.graph.node] == [n.op_type for n in b.graph.node]
    assert {i.name: i.SerializeToString() for i in a.graph.initializer} == {
        i.name: i.SerializeToString() for i in b.graph.initializer
    }


def test_unsupported_layer_raises_naming_it_and_writes_nothing(tmp_path):
    model, batches = make("lstm")
    result = quantize(model, QuantConfig(mode="dynamic"), batches, validate=False)
    path = tmp_path / "lstm.onnx"
    with pytest.raises(ExportError, match=r"rnn \(QuantizedLSTM\)") as info:
        export_onnx(result, batches[0], path)
    assert info.value.layers == ["rnn"]
    assert os.listdir(tmp_path) == []


def test_failed_export_keeps_the_earlier_file(tmp_path, monkeypatch):
    model, batches = make("mlp")
    result = quantize(model, QuantConfig(mode="dynamic"), batches, validate=False)
    path = tmp_path / "model.onnx"
    path.write_bytes(b"earlier")

    def broken(model, args, f, **kwargs):
        f.write(b"half a graph")
        raise RuntimeError("the tracer gave up")

    monkeypatch.setattr(torch.onnx, "export", broken)
    with pytest.raises(ExportError, match="the tracer gave up"):
        export_onnx(result, batches[0], path)
    assert path.read_bytes() == b"earlier" and os.listdir(tmp_path) == ["model.onnx"]


def test_int4_needs_opset_21(tmp_path):
    model, batches = make("mlp")
    result = quantize(model, QuantConfig(**INT4_G32), batches, validate=False)
    with pytest.raises(ExportError, match=r"opset 21.*net\.0, net\.2, net\.4") as info:
        export_onnx(result, batches[0], tmp_path / "m.onnx", opset=17)
    assert info.value.layers == ["net.0", "net.2", "net.4"]
    with pytest.raises(ExportError, match="opset: 12 is not supported"):
        export_onnx(result, batches[0], tmp_path / "m.onnx", opset=12)
    assert os.listdir(tmp_path) == []


def test_opset_can_be_chosen(tmp_path):
    model, batches = make("mlp")
    result = quantize(model, QuantConfig(mode="static"), batches, validate=False)
    out = export_onnx(result, batches[0], tmp_path / "m.onnx", opset=13, dynamic_batch=False)
    proto = onnx.load(out.path)
    onnx.checker.check_model(proto, full_check=True)
    assert out.opset == proto.opset_import[0].version == 13
    assert [d.dim_value for d in proto.graph.input[0].type.tensor_type.shape.dim] == [8, 64]
    (got,) = run_onnx(out.path, {"x": batches[1]})
    with torch.no_grad():
        assert float(sqnr_db(result.model(batches[1]), torch.from_numpy(got))) >= INT8_DB


@pytest.fixture(scope="module")
def minilm_and_batches():
    from algorithm_models import SENTENCES, batches, minilm

    return minilm(), batches(SENTENCES[:9], 4)  # batches of 4, 4 and 1 sentences, of different lengths


@pytest.mark.parametrize(
    ("settings", "min_db"), [({"mode": "weight-only"}, INT8_DB), (INT4_G32, INT4_DB)], ids=["int8", "int4-g32"]
)
def test_minilm(tmp_path, minilm_and_batches, settings, min_db):
    model, data = minilm_and_batches
    result = quantize(model, QuantConfig(**settings), data[:2], validate=False)
    seq = {1: "sequence"}
    axes = {"input_ids": seq, "attention_mask": seq, "last_hidden_state": seq}
    out = export_onnx(result, data[0], tmp_path / "minilm.onnx", dynamic_axes=axes)
    onnx.checker.check_model(onnx.load(out.path), full_check=True)
    assert out.input_names == ["input_ids", "attention_mask"]
    assert out.output_names == ["last_hidden_state", "pooler_output"]
    assert out.dequantize_nodes == len(layers(result.model)) and out.quantize_nodes == 0
    quantized = result.report.quantized_bytes
    assert abs(out.initializer_bytes - quantized) <= 0.10 * quantized
    for batch in data[1:]:
        assert batch["input_ids"].shape != data[0]["input_ids"].shape
        got = run_onnx(out.path, batch)[0]
        with torch.no_grad():
            ref = result.model(**batch).last_hidden_state
        db = float(sqnr_db(ref, torch.from_numpy(got)))
        print(f"ONNX Runtime vs mono-quant, all-MiniLM-L6-v2 {settings} {tuple(ref.shape)}: {db:.1f} dB")
        assert db >= min_db, db
