"""Quantized layers run under every grad mode, in any order (scratch buffers, packed kernel
state and caches must not be tied to the mode of the first forward)."""

from __future__ import annotations

import contextlib
import itertools

import pytest
import torch
from test_modules_contract import TYPES, make_case
from torch import nn

from mono_quant_core import QuantConfig, quantize
from mono_quant_core.kernels import fallback
from mono_quant_core.modules import QuantizedLinear, replacement_for
from mono_quant_core.outputs import flat_tensors
from mono_quant_core.tensor import sqnr_db

INT4 = dict(dtype="int4", mode="weight-only", granularity="per-group", group_size=32)

# (config, in_features, out_features, the kernel it selects): every kernel and every mode.
CASES = [
    (dict(mode="dynamic"), 128, 64, "fbgemm-dynamic"),
    (dict(mode="weight-only"), 128, 64, "int8pack-bf16"),
    (dict(mode="static"), 128, 64, "onednn-static"),
    (dict(mode="weight-only", granularity="per-group", group_size=32), 128, 64, "dequantize"),
    (dict(mode="weight-only"), 20, 64, "dequantize"),
    (INT4, 128, 64, "int4pack-bf16"),
    (dict(INT4, group_size=48), 96, 64, "dequantize"),
    (dict(dtype="fp16"), 128, 64, "upcast"),
    (dict(dtype="bf16"), 128, 64, "upcast"),
    # Wide enough that the blockwise path loops over several scratch blocks.
    (dict(dtype="bf16"), 4096, 640, "upcast"),
]


def _mode(name: str) -> contextlib.AbstractContextManager:
    return {"inference": torch.inference_mode(), "no_grad": torch.no_grad(), "grad": torch.enable_grad()}[name]


def _forward(q: nn.Module, x: torch.Tensor, mode: str, needs_grad: bool) -> torch.Tensor:
    with _mode(mode):
        xi = x.clone().requires_grad_(needs_grad and mode == "grad")
        y = q(xi)
        if xi.requires_grad:
            y.sum().backward()
            assert xi.grad is not None and torch.isfinite(xi.grad).all()
        return y.detach().clone()


@pytest.mark.parametrize("config,k,n,kernel", CASES, ids=[f"{c[3]}-{c[1]}x{c[2]}-{i}" for i, c in enumerate(CASES)])
@pytest.mark.parametrize("needs_grad", [False, True], ids=["input-without-grad", "input-with-grad"])
def test_every_grad_mode_in_every_order(config, k, n, kernel, needs_grad):
    torch.manual_seed(0)
    float_layer = nn.Linear(k, n).eval()
    x = torch.randn(4, k, generator=torch.Generator().manual_seed(1))
    for order in itertools.permutations(("inference", "no_grad", "grad")):
        fallback._scratch.__dict__.clear()  # a fresh thread's state: the first mode allocates
        q = QuantizedLinear.from_float(float_layer, QuantConfig(**config))
        if q.mode == "static":
            q.set_input_qparams(x.abs().max() * 2 / 255, 0)
        outputs = {mode: _forward(q, x, mode, needs_grad) for mode in order}
        # ... and again, each mode after all the others.
        again = {mode: _forward(q, x, mode, needs_grad) for mode in order}
        assert q.kernel == kernel
        reference = outputs[order[0]]
        for mode in order:
            assert torch.equal(outputs[mode], again[mode]), (order, mode)
            # An input that needs gradients takes the exact float fallback; the packed
            # kernels compute with bf16 activations (about 50 dB from it).
            assert sqnr_db(reference, outputs[mode]) > (40 if needs_grad else 200), (order, mode)


@pytest.mark.parametrize("dtype", ["bf16", "fp16", "int8", "int4"])
def test_a_users_forward_after_a_run(dtype):
    """The reported crash: validation ran under inference mode, then the user's no_grad forward."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 64)).eval()
    extra = dict(mode="weight-only", granularity="per-group", group_size=32) if dtype == "int4" else {}
    r = quantize(model, QuantConfig(dtype=dtype, **extra), calibration=[torch.randn(4, 256)] * 8)
    x = torch.randn(2, 256)
    with torch.no_grad():
        a = r.model(x)
    b = r.model(x.requires_grad_(True))
    b.sum().backward()
    with torch.inference_mode():
        c = r.model(x.detach())
    assert torch.equal(a, c) and sqnr_db(a, b.detach()) > 40


@pytest.mark.parametrize("name", TYPES)
@pytest.mark.parametrize("mode", ["weight-only", "dynamic", "bf16"])
def test_every_module_type_under_every_grad_mode(name, mode):
    module, x = make_case(name)
    config = QuantConfig(dtype="bf16") if mode == "bf16" else QuantConfig(mode=mode)
    for order in itertools.permutations(("inference", "no_grad", "grad")):
        fallback._scratch.__dict__.clear()
        q = replacement_for(module).from_float(module, config)
        outs = {}
        for grad_mode in order:
            with _mode(grad_mode):
                outs[grad_mode] = [t.detach().clone() for t in flat_tensors(q(x))]
        for grad_mode in order:
            assert all(torch.equal(a, b) for a, b in zip(outs[order[0]], outs[grad_mode], strict=True)), (
                order,
                grad_mode,
            )
