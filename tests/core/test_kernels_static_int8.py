"""Static int8 kernels: Conv1d/2d/3d through oneDNN's int8 convolution and Linear through an int8 x int8
op, chosen by the agreement probe, packed once, falling back cleanly, reloading bit-exactly."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import mono_quant_core.kernels.qconv_static as qconv_static
import mono_quant_core.kernels.select as select
from mono_quant_core import QuantConfig, load_quantized, quantize, save_quantized
from mono_quant_core.kernels.qconv_static import OnednnStaticConv
from mono_quant_core.kernels.qlinear_static import FbgemmStatic, OnednnStatic
from mono_quant_core.modules import QuantizedConv1d, QuantizedConv2d, QuantizedConv3d, QuantizedLinear
from mono_quant_core.tensor import activation_qparams, sqnr_db

#: The int8 kernels quantize the same values on the same grid and accumulate exactly: they differ
#: from the dequantized reference only by float rounding (ties of the input rounding, summation order).
AGREEMENT_DB = 60.0
#: The int8 layer against the float layer (8-bit input and per-channel 8-bit weights).
FLOAT_DB = 35.0


LAYOUTS = {4: torch.channels_last, 5: torch.channels_last_3d}


def gen(seed):
    return torch.Generator().manual_seed(seed)


def static_layer(cls, float_layer, x, **config):
    q = cls.from_float(float_layer, QuantConfig(mode="static", **config))
    q.set_input_qparams(*activation_qparams(x))
    return q


def calibrated_conv(size: int = 10):
    """A Conv2d(8, 16, 3), an input batch ``[2, 8, size, size]`` and its static twin calibrated on it."""
    torch.manual_seed(0)
    conv = nn.Conv2d(8, 16, 3, padding=1).eval()
    x = torch.randn(2, 8, size, size, generator=gen(1))
    return conv, x, static_layer(QuantizedConv2d, conv, x)


CONVS = [
    (QuantizedConv1d, lambda: nn.Conv1d(8, 16, 3, padding=1), (2, 8, 20)),
    (QuantizedConv1d, lambda: nn.Conv1d(8, 16, 5, stride=2, dilation=2, groups=4), (2, 8, 30)),
    (QuantizedConv2d, lambda: nn.Conv2d(8, 16, 3, padding=1), (2, 8, 12, 12)),
    (QuantizedConv2d, lambda: nn.Conv2d(16, 16, 3, stride=2, padding=1, groups=16, bias=False), (3, 16, 11, 9)),
    (QuantizedConv2d, lambda: nn.Conv2d(8, 32, (1, 3), padding=(0, 1)), (1, 8, 7, 9)),
    (QuantizedConv3d, lambda: nn.Conv3d(4, 8, 3, stride=(1, 2, 2), padding=1), (2, 4, 5, 8, 8)),
]


@pytest.mark.parametrize("granularity", ["per-channel", "per-tensor"])
@pytest.mark.parametrize("cls,build,shape", CONVS)
def test_static_conv_runs_the_int8_kernel_and_agrees(cls, build, shape, granularity):
    torch.manual_seed(0)
    conv = build().eval()
    x = torch.randn(shape, generator=gen(1))
    q = static_layer(cls, conv, x, granularity=granularity)
    with torch.inference_mode():
        y = q(x)
        reference = q.static_reference(x)
        exact = conv(x)
    assert q.kernel == "onednn-qconv"
    assert y.shape == exact.shape and y.dtype == torch.float32
    # The output keeps the input's memory format, as torch's own convolution: a contiguous input
    # gives a contiguous output (``.view`` works on it), a channels-last one stays channels-last.
    assert y.is_contiguous()
    y.view(y.shape[0], -1)
    assert sqnr_db(reference, y) >= AGREEMENT_DB
    assert sqnr_db(exact, y) >= FLOAT_DB
    if x.dim() in LAYOUTS:
        with torch.inference_mode():
            y_last = q(x.contiguous(memory_format=LAYOUTS[x.dim()]))
        assert y_last.is_contiguous(memory_format=LAYOUTS[x.dim()]) and not y_last.is_contiguous()
        assert torch.equal(y_last, y)


@pytest.mark.parametrize(
    "config,build,expected",
    [
        (dict(scheme="asymmetric"), lambda: nn.Conv2d(8, 16, 3, padding=1), "dequantize"),  # weight zero points
        (dict(), lambda: nn.Conv2d(8, 16, 3, padding=1, padding_mode="reflect"), "dequantize"),
        (dict(), lambda: nn.Conv2d(8, 16, 3, padding="same"), "dequantize"),  # padding given as a word
    ],
)
def test_layers_the_int8_op_cannot_take_use_the_dequantized_reference(config, build, expected):
    torch.manual_seed(0)
    conv = build().eval()
    x = torch.randn(2, 8, 10, 10, generator=gen(1))
    q = static_layer(QuantizedConv2d, conv, x, **config)
    with torch.inference_mode():
        y = q(x)
        assert torch.equal(y, q.static_reference(x))
    assert q.kernel == expected
    assert sqnr_db(conv(x).detach(), y) >= FLOAT_DB


def test_the_conv_weight_is_packed_once_and_repacked_when_the_grid_changes(monkeypatch):
    packs = []
    real = qconv_static.OnednnStaticConv.pack
    monkeypatch.setattr(qconv_static.OnednnStaticConv, "pack", lambda self, m: packs.append(1) or real(self, m))
    _conv, x, q = calibrated_conv(10)
    with torch.inference_mode():
        first = q(x)
        for _ in range(3):
            assert torch.equal(q(x), first)
        assert len(packs) == 1
        q.set_input_qparams(*activation_qparams(2 * x))  # a new calibrated grid: packed again
        q(x)
    assert len(packs) == 2 and q.kernel == "onednn-qconv"


def test_conv_falls_back_when_the_op_is_missing(monkeypatch):
    monkeypatch.setattr(OnednnStaticConv, "available", lambda self: False)
    _conv, x, q = calibrated_conv(10)
    with torch.inference_mode():
        y = q(x)
        assert torch.equal(y, q.static_reference(x))
    assert q.kernel == "dequantize"


def test_conv_kernel_that_disagrees_is_rejected_by_the_probe(monkeypatch):
    real = qconv_static._ops

    def wrong_ops():  # an op that returns the right shape with wrong values (a layout or scale bug)
        return {d: (lambda *a, op=op: op(*a).flip(1)) for d, op in real().items()}

    monkeypatch.setattr(qconv_static, "_ops", wrong_ops)
    conv, x, q = calibrated_conv(10)
    with torch.inference_mode():
        y = q(x)
    assert q.kernel == "dequantize"
    assert sqnr_db(conv(x).detach(), y) >= FLOAT_DB


def test_conv_kernel_failing_at_run_falls_back_for_good(monkeypatch):
    _conv, x, q = calibrated_conv(10)
    with torch.inference_mode():
        q(x)
        assert q.kernel == "onednn-qconv"

        def refuse(self, state, x):
            raise RuntimeError("oneDNN: unsupported input")

        monkeypatch.setattr(OnednnStaticConv, "run", refuse)
        y = q(x)
        assert q.kernel == "dequantize" and torch.equal(y, q.static_reference(x))
        assert torch.equal(q(x), y)


def test_conv_inputs_the_op_does_not_serve():
    _conv, x, q = calibrated_conv(10)
    assert q(torch.randn(0, 8, 10, 10)).shape == (0, 16, 10, 10)
    # An input autograd must differentiate through: the dequantized reference (the op has no
    # backward), this once; the kernel stays chosen.
    xg = x.clone().requires_grad_(True)
    yg = q(xg)
    assert yg.requires_grad and torch.equal(yg.detach(), q.static_reference(x))
    with torch.inference_mode():
        q(x)
        assert q.kernel == "onednn-qconv"
        half = q(x.to(torch.bfloat16))  # another activation dtype: quantized from it, returned in it
        assert half.dtype == torch.bfloat16
        assert sqnr_db(q(x), half.float()) >= 40.0
        channels_last = x.contiguous(memory_format=torch.channels_last)  # kept in the op's layout
        y = q(channels_last)
        assert y.is_contiguous(memory_format=torch.channels_last) and torch.equal(y, q(x))
        strided = torch.randn(2, 8, 10, 20, generator=gen(2))[..., ::2]  # not contiguous
        assert sqnr_db(q.static_reference(strided), q(strided)) >= AGREEMENT_DB


@pytest.mark.parametrize("in_features", [128, 20])
def test_static_linear_computes_in_int8(in_features):
    torch.manual_seed(0)
    linear = nn.Linear(in_features, 48).eval()
    x = torch.randn(8, in_features, generator=gen(1))
    q = static_layer(QuantizedLinear, linear, x)
    with torch.inference_mode():
        y = q(x)
        reference = F.linear(q.quantize_input(x), q.dequantized_weight(), linear.bias)
        assert q.kernel == "onednn-static"
        assert sqnr_db(reference, y) >= AGREEMENT_DB
        assert sqnr_db(linear(x), y) >= FLOAT_DB
        assert q(torch.randn(2, 3, in_features)).shape == (2, 3, 48)


def test_static_linear_kernel_order_and_fallbacks(monkeypatch):
    torch.manual_seed(0)
    linear = nn.Linear(128, 48).eval()
    x = torch.randn(8, 128, generator=gen(1))

    def kernel_and_agreement():
        q = static_layer(QuantizedLinear, linear, x)
        with torch.inference_mode():
            y = q(x)
            reference = F.linear(q.quantize_input(x), q.dequantized_weight(), linear.bias)
        return q.kernel, sqnr_db(reference, y)

    monkeypatch.setattr(OnednnStatic, "available", lambda self: False)
    kernel, db = kernel_and_agreement()
    assert kernel == "fbgemm-static" and db >= AGREEMENT_DB
    monkeypatch.setattr(FbgemmStatic, "run", lambda self, state, x: torch.zeros(x.shape[0], 48))  # disagrees
    kernel, db = kernel_and_agreement()
    assert kernel == "int8pack-bf16" and db >= 45.0  # bf16 activations: the weight-only op
    q = QuantizedLinear.from_float(linear, QuantConfig(mode="static", scheme="asymmetric"))
    q.set_input_qparams(*activation_qparams(x))
    q(x)
    assert q.kernel == "int8pack-bf16"  # weight zero points: not an int8 x int8 op


def test_probe_of_a_static_layer_lies_on_its_grid():
    """The probe covers every code of the calibrated grid, also when the grid is narrow (a probe of
    N(0, 1) values would clip them all and compare nothing but the clipping)."""
    torch.manual_seed(0)
    q = QuantizedLinear.from_float(nn.Linear(64, 16), QuantConfig(mode="static"))
    q.set_input_qparams(torch.tensor(0.001), torch.tensor(-100))
    x = select.probe_input(q, (64, 64))
    codes = x / 0.001 - 100
    assert torch.allclose(codes, codes.round(), atol=1e-3)
    assert int(codes.round().min()) == -128 and int(codes.round().max()) == 127


class ResBlock(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.conv1 = nn.Conv2d(c, c, 3, padding=1)
        self.conv2 = nn.Conv2d(c, c, 3, padding=1)

    def forward(self, x):
        return torch.relu(x + self.conv2(torch.relu(self.conv1(x))))


class SmallResNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, stride=2, padding=1), nn.ReLU())
        self.blocks = nn.Sequential(ResBlock(16), nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.ReLU(), ResBlock(32))
        self.head = nn.Linear(32, 10)

    def forward(self, x):
        return self.head(self.blocks(self.stem(x)).mean(dim=(2, 3)))


def resnet_and_data():
    torch.manual_seed(0)
    model = SmallResNet().eval()
    g = gen(1)
    return model, [torch.randn(4, 3, 24, 24, generator=g) for _ in range(10)]


def kernels(model):
    return {name: m.kernel for name, m in model.named_modules() if hasattr(m, "kernel")}


def test_quantized_resnet_runs_int8_kernels_and_keeps_30_db(tmp_path):
    model, data = resnet_and_data()
    result = quantize(model, QuantConfig(mode="static", observer="minmax"), calibration=data[:8], validate=False)
    held_out = torch.cat(data[8:])
    with torch.inference_mode():
        reference, y = model(held_out), result.model(held_out)
    chosen = kernels(result.model)
    assert len(chosen) == 7
    assert {k for name, k in chosen.items() if name != "head"} == {"onednn-qconv"}
    assert chosen["head"] == "onednn-static"
    assert sqnr_db(reference, y) >= 30.0

    # The file is the same format (no new tensors) and reloads bit-exactly, into the same kernels.
    path = tmp_path / "resnet.safetensors"
    save_quantized(result, path)
    loaded = load_quantized(path, model=SmallResNet().eval())
    saved, back = result.model.state_dict(), loaded.state_dict()
    assert list(saved) == list(back)
    for key, t in saved.items():
        assert back[key].dtype == t.dtype and torch.equal(back[key], t), key
    with torch.inference_mode():
        assert torch.equal(loaded(held_out), y)
    assert kernels(loaded) == chosen
    assert not any("output" in key for key in saved)  # nothing calibrated beyond the input grids


def test_quantize_validates_the_int8_model():
    model, data = resnet_and_data()
    result = quantize(model, QuantConfig(mode="static", observer="minmax"), calibration=data)
    assert result.report.load_test_passed
    assert result.report.output_sqnr_db >= 30.0


def test_small_batches_take_fbgemm_after_it_agrees_with_onednn(monkeypatch):
    import mono_quant_core.kernels.qlinear_static as qlinear_static

    torch.manual_seed(0)
    linear = nn.Linear(128, 48).eval()
    x = torch.randn(8, 128, generator=gen(1))
    q = static_layer(QuantizedLinear, linear, x)
    reference = F.linear(q.quantize_input(x), q.dequantized_weight(), linear.bias)
    with torch.inference_mode():
        big = q(x)  # oneDNN's path: the small-batch pack is not made
        _, state = q._kernel_state
        assert state.small is None
        one = q(x[:1])
        assert state.small  # fbgemm's pack, built at the first small batch
        assert sqnr_db(reference, big) >= AGREEMENT_DB and sqnr_db(reference[:1], one) >= AGREEMENT_DB
    # An fbgemm that disagrees with oneDNN is never used: small batches stay on oneDNN's op.
    monkeypatch.setattr(qlinear_static.FbgemmStatic, "run", lambda self, state, x: torch.zeros(x.shape[0], 48))
    q = static_layer(QuantizedLinear, linear, x)
    with torch.inference_mode():
        one = q(x[:1])
        _, state = q._kernel_state
        assert state.small is False and q.kernel == "onednn-static"
        assert sqnr_db(reference[:1], one) >= AGREEMENT_DB


def test_an_unbatched_input_runs_the_reference_once_and_keeps_the_kernel():
    _conv, x, q = calibrated_conv(12)
    with torch.inference_mode():
        q(x)
        assert q.kernel == "onednn-qconv"
        single = q(x[0])  # [C, H, W]: the op wants a batch; the reference answers this call
        assert torch.equal(single, q.static_reference(x[0]))
        q(x)
    assert q.kernel == "onednn-qconv"


def test_without_torchs_quantized_tensors_the_kernels_round_the_same_codes(monkeypatch):
    """torch has deprecated ``quantize_per_tensor``: where it is gone the input codes come from
    the project's own rounding, the same codes, and the int8 kernels still run and agree."""
    from mono_quant_core.kernels.base import uint8_codes

    x = torch.randn(2, 8, 12, 12, generator=gen(3)).contiguous(memory_format=torch.channels_last) * 3
    fast = uint8_codes(x, 0.05, 131)
    torch.manual_seed(0)
    conv, linear = nn.Conv2d(8, 16, 3, padding=1).eval(), nn.Linear(32, 16).eval()
    xl = torch.randn(8, 32, generator=gen(4))
    monkeypatch.delattr(torch, "quantize_per_tensor")
    slow = uint8_codes(x, 0.05, 131)
    assert slow.dtype == torch.uint8 and torch.equal(slow, fast)
    assert slow.is_contiguous(memory_format=torch.channels_last)
    q_conv, q_linear = static_layer(QuantizedConv2d, conv, x), static_layer(QuantizedLinear, linear, xl)
    with torch.inference_mode():
        y_conv, y_linear = q_conv(x), q_linear(xl)
        assert sqnr_db(q_conv.static_reference(x), y_conv) >= AGREEMENT_DB
    assert q_conv.kernel == "onednn-qconv" and q_linear.kernel in ("onednn-static", "fbgemm-static")
    assert sqnr_db(conv(x).detach(), y_conv) >= FLOAT_DB and sqnr_db(linear(xl).detach(), y_linear) >= FLOAT_DB


def test_quint8_view_shares_the_codes_and_is_none_without_quantized_tensors(monkeypatch):
    """The one place the engine makes a torch quint8 tensor; callers fall back when it gives None."""
    from mono_quant_core.kernels.base import plain_codes, quint8_view

    codes = torch.randint(0, 256, (2, 3, 4, 4), dtype=torch.uint8).contiguous(memory_format=torch.channels_last)
    q = quint8_view(codes, 0.05, 7)
    assert q is not None and q.data_ptr() == codes.data_ptr()
    assert torch.equal(q.dequantize(), (codes.to(torch.float32) - 7) * 0.05)
    back = plain_codes(q)
    assert back.dtype == torch.uint8 and back.data_ptr() == codes.data_ptr() and torch.equal(back, codes)
    monkeypatch.delattr(torch, "_empty_affine_quantized")
    assert quint8_view(codes, 0.05, 7) is None
