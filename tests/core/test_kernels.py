"""Kernel selection for quantized Linear: the expected path per config, agreement with the
dequantize fallback, forced fallbacks when an op is missing or refuses, cache rebuilds."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from torch import nn

import mono_quant_core.kernels.select as select
from mono_quant_core.config import QuantConfig
from mono_quant_core.kernels.int4_mm import Int4PackMM
from mono_quant_core.kernels.int8_mm import Int8PackMM
from mono_quant_core.modules import QuantizedLinear
from mono_quant_core.tensor import sqnr_db


def layer(k=128, n=64, seed=0):
    torch.manual_seed(seed)
    return nn.Linear(k, n).eval()


def inputs(k=128, rows=8, seed=1):
    return torch.randn(rows, k, generator=torch.Generator().manual_seed(seed))


INT4 = dict(dtype="int4", mode="weight-only", granularity="per-group", group_size=32)


@pytest.mark.parametrize(
    "config,k,n,expected",
    [
        (dict(mode="dynamic"), 128, 64, "fbgemm-dynamic"),
        (dict(mode="dynamic", scheme="asymmetric", granularity="per-tensor"), 128, 64, "fbgemm-dynamic"),
        (dict(mode="weight-only"), 128, 64, "int8pack-bf16"),
        (dict(mode="weight-only", scheme="asymmetric"), 128, 64, "int8pack-bf16"),
        (dict(mode="static"), 128, 64, "onednn-static"),  # int8 x int8 (tests/core/test_kernels_static_int8.py)
        (dict(mode="static", scheme="asymmetric"), 128, 64, "int8pack-bf16"),  # weight zero points: not the int8 op
        (dict(mode="weight-only", granularity="per-group", group_size=32), 128, 64, "dequantize"),
        (dict(mode="weight-only"), 20, 64, "dequantize"),  # in_features % 16 != 0: the op would crash
        (INT4, 128, 64, "int4pack-bf16"),
        (dict(INT4, granularity="per-channel", scheme="asymmetric"), 96, 48, "int4pack-bf16"),
        (dict(INT4, granularity="per-tensor", scheme="asymmetric"), 128, 64, "int4pack-bf16"),
        (dict(INT4, scheme="asymmetric"), 128, 64, "int4pack-bf16"),
        (INT4, 128, 40, "dequantize"),  # out_features % 16 != 0: the packing op refuses
        (dict(INT4, group_size=48), 96, 64, "dequantize"),  # group size the op does not take
        (dict(dtype="fp16"), 128, 64, "upcast"),
        (dict(dtype="bf16"), 128, 64, "upcast"),
    ],
)
def test_kernel_choice_and_agreement_with_fallback(config, k, n, expected):
    float_layer, x = layer(k, n), inputs(k)
    q = QuantizedLinear.from_float(float_layer, QuantConfig(**config))
    if q.mode == "static":
        q.set_input_qparams(x.abs().max() * 2 / 255, 0)
    with torch.inference_mode():
        y = q(x)
    assert q.kernel == expected
    fallback = select.fallback_for(q)
    reference = fallback.run(fallback.pack(q), q.quantize_input(x))
    # bf16 activations cost ~50 dB; fbgemm rounds activations on its own grid (same rule, float rounding).
    # The static int8 op quantizes the same values on the same grid and accumulates exactly.
    floor = {"fbgemm-dynamic": 30.0, "int8pack-bf16": 45.0, "int4pack-bf16": 45.0, "onednn-static": 60.0}.get(expected)
    if floor is None:
        assert torch.equal(y, reference)
    else:
        assert sqnr_db(reference, y) >= floor


def forced_fallback_sqnr(config, k=128, n=64) -> tuple[str, float]:
    float_layer, x = layer(k, n), inputs(k)
    q = QuantizedLinear.from_float(float_layer, QuantConfig(**config))
    with torch.inference_mode():
        y = q(x)
        return q.kernel, sqnr_db(float_layer(x), y)


def test_int8pack_missing(monkeypatch):
    monkeypatch.delattr(torch, "_weight_int8pack_mm")
    kernel, db = forced_fallback_sqnr(dict(mode="weight-only"))
    assert kernel == "dequantize" and db >= 40.0


def test_fbgemm_missing(monkeypatch):
    """Without torch's (deprecated) qint8 tensors fbgemm cannot pack: the dequantized reference serves."""
    monkeypatch.delattr(torch, "_make_per_channel_quantized_tensor")
    monkeypatch.delattr(torch, "_empty_per_channel_affine_quantized")
    kernel, db = forced_fallback_sqnr(dict(mode="dynamic"))
    assert kernel == "dequantize" and db >= 35.0


def test_qint8_weight_is_a_view_else_a_copy_else_none(monkeypatch):
    """fbgemm's packing op takes only a qint8 tensor: over the codes' own storage where torch
    allows, a copy where only the copying constructor is left, None without either."""
    from mono_quant_core.kernels.base import qint8_weight

    codes = torch.randint(-127, 128, (6, 10), dtype=torch.int8)
    scale, zero_point = torch.rand(6) + 0.01, torch.zeros(6, dtype=torch.int8)
    view = qint8_weight(codes, scale, zero_point)
    assert view is not None and view.data_ptr() == codes.data_ptr() and torch.equal(view.int_repr(), codes)
    monkeypatch.delattr(torch, "_empty_per_channel_affine_quantized")
    copy = qint8_weight(codes, scale, zero_point)
    assert copy is not None and copy.data_ptr() != codes.data_ptr() and torch.equal(copy.int_repr(), codes)
    assert torch.allclose(copy.q_per_channel_scales().float(), scale)
    monkeypatch.delattr(torch, "_make_per_channel_quantized_tensor")
    assert qint8_weight(codes, scale, zero_point) is None


def test_fbgemm_packs_through_a_copy_without_the_view(monkeypatch):
    float_layer, x = layer(), inputs()
    config = QuantConfig(mode="dynamic")
    with torch.inference_mode():
        expected = QuantizedLinear.from_float(float_layer, config)(x)
        monkeypatch.delattr(torch, "_empty_per_channel_affine_quantized")
        q = QuantizedLinear.from_float(float_layer, config)
        y = q(x)
    assert q.kernel == "fbgemm-dynamic" and torch.equal(y, expected)


def test_without_qint8_tensors_saturation_is_assumed(monkeypatch):
    """The saturation probe packs a worst case; where nothing can pack it cannot tell, and the
    safe answer is that 8-bit products may saturate (static int8 kernels then stand aside)."""
    from mono_quant_core.kernels import fbgemm_dynamic

    monkeypatch.delattr(torch, "_make_per_channel_quantized_tensor")
    monkeypatch.delattr(torch, "_empty_per_channel_affine_quantized")
    fbgemm_dynamic.reduce_range_needed.cache_clear()
    try:
        assert fbgemm_dynamic.reduce_range_needed() is True
    finally:
        fbgemm_dynamic.reduce_range_needed.cache_clear()  # the real answer for the later tests


def test_fbgemm_prepack_refuses(monkeypatch):
    def refuse(*args, **kwargs):
        raise RuntimeError("no fbgemm here")

    monkeypatch.setattr(torch.ops.quantized, "linear_prepack", refuse)
    kernel, db = forced_fallback_sqnr(dict(mode="dynamic"))
    assert kernel == "dequantize" and db >= 35.0


def test_int4_conversion_refuses(monkeypatch):
    def refuse(*args, **kwargs):
        raise RuntimeError("not on this CPU")

    monkeypatch.setattr(torch.ops.aten, "_convert_weight_to_int4pack_for_cpu", refuse)
    kernel, db = forced_fallback_sqnr(INT4)
    assert kernel == "dequantize" and db >= 17.0


def test_kernel_with_wrong_results_is_rejected_at_pack(monkeypatch):
    monkeypatch.setattr(Int8PackMM, "run", lambda self, state, x: torch.zeros(x.shape[0], state[0].shape[0]))
    kernel, db = forced_fallback_sqnr(dict(mode="weight-only"))
    assert kernel == "dequantize" and db >= 40.0


def test_kernel_failing_at_run_falls_back(monkeypatch):
    float_layer, x = layer(), inputs()
    q = QuantizedLinear.from_float(float_layer, QuantConfig(**INT4))
    q(x)
    assert q.kernel == "int4pack-bf16"

    def fail(self, state, x):
        raise RuntimeError("refused")

    monkeypatch.setattr(Int4PackMM, "run", fail)
    y = q(x)
    assert q.kernel == "dequantize" and sqnr_db(float_layer(x).detach(), y) >= 17.0
    with pytest.raises(RuntimeError):  # a wrong input shape still fails as in nn.Linear
        q(torch.randn(2, 7))


@pytest.mark.parametrize("mode", ["dynamic", "weight-only"])
def test_packed_state_follows_load_state_dict(mode):
    x = inputs()
    a = QuantizedLinear.from_float(layer(seed=0), QuantConfig(mode=mode))
    b = QuantizedLinear.from_float(layer(seed=5), QuantConfig(mode=mode))
    before = b(x)
    b.load_state_dict(a.state_dict())  # in-place copy into the packed-from buffers
    after = b(x)
    assert not torch.equal(before, after)
    assert torch.equal(after, a(x))


def test_empty_batch_and_leading_dims():
    q = QuantizedLinear.from_float(layer(), QuantConfig())
    assert q(torch.randn(0, 128)).shape == (0, 64)
    x = torch.randn(2, 3, 4, 128)
    assert torch.equal(q(x), q(x.reshape(-1, 128)).reshape(2, 3, 4, 64))


def test_no_warning_at_import_or_forward():
    code = (
        "import torch\n"
        "from torch import nn\n"
        "import mono_quant_core.modules, mono_quant_core.kernels\n"
        "from mono_quant_core.config import QuantConfig\n"
        "from mono_quant_core.modules import QuantizedLinear\n"
        "cfgs = [QuantConfig(), QuantConfig(mode='weight-only'),\n"
        "        QuantConfig(dtype='int4', mode='weight-only', granularity='per-group', group_size=32)]\n"
        "for c in cfgs:\n"
        "    q = QuantizedLinear.from_float(nn.Linear(64, 32), c)\n"
        "    q(torch.randn(2, 64))\n"
        "    print(q.kernel)\n"
    )
    done = subprocess.run([sys.executable, "-W", "error", "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["fbgemm-dynamic", "int8pack-bf16", "int4pack-bf16"]


@pytest.mark.parametrize(
    "config",
    [
        dict(mode="weight-only", granularity="per-group", group_size=32),
        dict(mode="weight-only", granularity="per-group", group_size=48),  # ragged
        dict(dtype="int4", mode="weight-only", granularity="per-group", group_size=32),
        dict(mode="weight-only", granularity="per-tensor", scheme="asymmetric"),
        dict(mode="dynamic", scheme="asymmetric"),
        dict(dtype="fp16"),
        dict(dtype="bf16"),
    ],
)
def test_blockwise_fallback_equals_whole_weight(monkeypatch, config):
    import mono_quant_core.kernels.fallback as fallback

    monkeypatch.setattr(fallback, "BLOCK_BYTES", 16 * 128 * 4)  # 16 rows per block: 5 blocks, the last ragged
    float_layer, x = layer(128, 72), inputs(128)
    q = QuantizedLinear.from_float(float_layer, QuantConfig(**config))
    kernel = select.fallback_for(q)
    y = kernel.run(kernel.pack(q), x)
    whole = torch.nn.functional.linear(x, q.dequantized_weight(), q.float_tensor("bias", torch.float32))
    assert torch.allclose(y, whole, rtol=1e-5, atol=1e-6)
    assert sqnr_db(whole, y) > 100.0
    rows = torch.empty(16 * 128)
    assert torch.equal(q.dequantized_rows("weight", 16, 32, out=rows), q.dequantized_weight()[16:32])


def test_blockwise_fallback_reuses_one_scratch_block_per_thread(monkeypatch):
    """Every call and layer converts its weight rows into the same buffer (no fresh block per step);
    another thread gets its own, so concurrent forwards never share one."""
    import threading

    import mono_quant_core.kernels.fallback as fallback

    monkeypatch.setattr(fallback, "BLOCK_BYTES", 16 * 128 * 4)
    layers = [QuantizedLinear.from_float(layer(128, 72), QuantConfig(dtype="bf16")) for _ in range(2)]
    x = inputs(128)
    kernel = select.fallback_for(layers[0])
    blocks = []
    real = fallback.scratch
    monkeypatch.setattr(fallback, "scratch", lambda *a: blocks.append(real(*a)) or blocks[-1])
    for q in layers * 2:
        kernel.run(kernel.pack(q), x)
    assert len(blocks) == 4 and len({b.data_ptr() for b in blocks}) == 1
    seen = []
    worker = threading.Thread(target=lambda: seen.append(real(16 * 128, torch.float32, torch.device("cpu"))))
    worker.start()
    worker.join()
    assert seen[0].data_ptr() != blocks[0].data_ptr()


@pytest.mark.parametrize("scheme", ["symmetric", "asymmetric"])
def test_int8pack_large_batches_use_exact_float_path(scheme):
    float_layer, x = layer(), inputs(rows=300)  # >= BLOCKWISE_ROWS
    q = QuantizedLinear.from_float(float_layer, QuantConfig(mode="weight-only", scheme=scheme))
    y = q(x)
    assert q.kernel == "int8pack-bf16"
    whole = torch.nn.functional.linear(x, q.dequantized_weight(), q.bias)
    assert sqnr_db(whole, y) > 100.0  # float32 rounding only, no bf16 activations
    assert 40.0 < sqnr_db(whole[:8], q(x[:8])) < 80.0  # small batches go through the bf16 op


UNALIGNED = r"""
import torch
from torch import nn
from mono_quant_core.config import QuantConfig
from mono_quant_core.modules import QuantizedLinear

torch.manual_seed(0)
for cfg in (dict(mode="weight-only"), dict(mode="static"),
            dict(dtype="int4", mode="weight-only", granularity="per-group", group_size=32)):
    q = QuantizedLinear.from_float(nn.Linear(64, 16).eval(), QuantConfig(**cfg))
    if cfg["mode"] == "static":
        q.set_input_qparams(0.02, 3)
    state = q.state_dict()
    for key, t in state.items():  # every buffer a view 24 bytes into a bigger storage
        buf = torch.zeros(t.numel() * t.element_size() + 24, dtype=torch.uint8)
        state[key] = buf[24:].view(t.dtype).view(t.shape).copy_(t)
    reference = q(torch.ones(3, 64))
    q.load_state_dict(state)
    xs = torch.randn(3 * 64 + 5, dtype=torch.bfloat16)[5:].view(3, 64)  # an unaligned bf16 input
    assert torch.equal(q(torch.ones(3, 64)), reference), q.kernel
    assert q(xs).shape == (3, 16), q.kernel
    print(q.kernel)
"""


def test_unaligned_buffers_and_inputs_do_not_crash_the_fast_kernels():
    """torch's int8pack op segfaults on operands that are not 64-byte aligned, which is what
    tensors read from a file are; run in a subprocess so a crash fails this test, not the run."""
    done = subprocess.run([sys.executable, "-c", UNALIGNED], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["int8pack-bf16", "onednn-static", "int4pack-bf16"]


@pytest.mark.parametrize(
    "config", [dict(dtype="bf16"), dict(mode="weight-only", granularity="per-group", group_size=32)]
)
def test_blockwise_fallback_is_differentiable_in_its_input(monkeypatch, config):
    """A gradient through the always-available path equals the one through the dequantized weight
    (scratch blocks are for inference only: a backward pass needs the weight it saved)."""
    import mono_quant_core.kernels.fallback as fallback

    monkeypatch.setattr(fallback, "BLOCK_BYTES", 16 * 128 * 4)
    q = QuantizedLinear.from_float(layer(128, 72), QuantConfig(**config))
    kernel = select.fallback_for(q)
    state = kernel.pack(q)
    x = inputs(128).requires_grad_()
    loss = kernel.run(state, x).square().sum()
    kernel.run(state, inputs(128) * 2)  # another forward before the backward pass must not matter
    loss.backward()
    reference = x.detach().clone().requires_grad_()
    bias = q.float_tensor("bias", torch.float32)
    torch.nn.functional.linear(reference, q.dequantized_weight(), bias).square().sum().backward()
    assert sqnr_db(reference.grad, x.grad) > 100.0
