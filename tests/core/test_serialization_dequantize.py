"""dequantize(): plain float modules whose weights are the dequantized ones; the input untouched."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from zoo import make

from mono_quant_core import QuantConfig, dequantize, load_quantized, quantize, save_quantized
from mono_quant_core.modules.base import QuantizedModule
from mono_quant_core.tensor_stats import weight_sqnr_db


@pytest.mark.parametrize(
    "name,config",
    [
        ("transformer", QuantConfig()),
        ("cnn", QuantConfig(mode="static")),
        ("lstm", QuantConfig(dtype="int4", mode="weight-only", granularity="per-group", group_size=16)),
        ("mlp", QuantConfig(dtype="bf16")),
    ],
)
def test_dequantize_gives_plain_float_modules_with_matching_sqnr(name, config):
    model, data = make(name)
    result = quantize(model, config, calibration=data)
    qmodel = result.model
    before = {k: v.clone() for k, v in qmodel.state_dict().items()}
    fmodel = dequantize(qmodel)

    assert not any(isinstance(m, QuantizedModule) for m in fmodel.modules())
    assert {n: type(m) for n, m in fmodel.named_modules()} == {n: type(m) for n, m in model.named_modules()}
    for layer in result.report.layers:
        qmodule, fmodule = qmodel.get_submodule(layer.name), fmodel.get_submodule(layer.name)
        deq = qmodule.dequantized_weights()
        params = dict(fmodule.named_parameters(recurse=False))
        for key, w in deq.items():
            assert torch.equal(params[key].float(), w), f"{layer.name}.{key}"
        original = dict(model.get_submodule(layer.name).named_parameters(recurse=False))
        sqnr = weight_sqnr_db({k: original[k] for k in deq}, {k: params[k].float() for k in deq})
        assert sqnr == pytest.approx(layer.weight_sqnr_db, rel=1e-9), layer.name
    # The quantized model is untouched and still quantized.
    assert all(isinstance(qmodel.get_submodule(layer.name), QuantizedModule) for layer in result.report.layers)
    for k, v in qmodel.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_dequantize_a_loaded_model_and_a_quantized_root(tmp_path):
    model, data = make("mlp")
    result = quantize(model, QuantConfig(mode="weight-only"), calibration=data[:2])
    save_quantized(result, tmp_path / "m.safetensors")
    loaded = load_quantized(tmp_path / "m.safetensors", model=model)
    x = data[0]
    assert torch.equal(dequantize(loaded)(x), dequantize(result.model)(x))

    root = nn.Linear(8, 4)
    qroot = quantize(root, QuantConfig(), validate=False).model
    assert isinstance(qroot, QuantizedModule)
    plain = dequantize(qroot)
    assert type(plain) is nn.Linear and isinstance(qroot, QuantizedModule)
    assert torch.equal(plain.weight.float(), qroot.dequantized_weights()["weight"])
