"""optimize_int8: static int8 models rewritten to pass uint8 activations between int8 layers, ReLU and
residual adds fused; outputs checked against the unrewritten model, fallbacks with their reasons."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from mono_quant_core import (
    Int8Report,
    QuantConfig,
    ValidationFailed,
    load_quantized,
    optimize_int8,
    quantize,
    save_quantized,
)
from mono_quant_core.int8_graph import CodesPool, CodesReLU, Int8Conv, Int8ConvAdd, Int8Linear, Quantize
from mono_quant_core.tensor import sqnr_db

#: Conv -> ReLU -> MaxPool -> Conv chains: the consumer reads the codes it would have rounded its
#: float input to (up to ties of the rounding), so the rewritten model is close to exact.
CHAIN_DB = 60.0
#: With residual adds the shortcut is rounded to its 8-bit grid (the one extra rounding).
RESIDUAL_DB = 30.0
#: The rewritten model against float may lose at most this much against the unrewritten one.
FLOAT_LOSS_DB = 3.0

LAYOUTS = {"contiguous": torch.contiguous_format, "channels_last": torch.channels_last}


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


class Chain(nn.Module):
    """Conv+BN -> ReLU -> MaxPool -> Conv -> ReLU -> Conv -> ReLU -> view -> Linear -> ReLU -> Linear,
    and the last convolution's float output as a second output (its layout is checked)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(16)
        self.pool = nn.MaxPool2d(2)
        self.conv2 = nn.Conv2d(16, 16, 3, padding=1)
        self.conv3 = nn.Conv2d(16, 8, 3, stride=2, padding=1)
        self.fc1 = nn.Linear(8 * 4 * 4, 32)
        self.fc2 = nn.Linear(32, 5)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        y = self.pool(torch.relu(self.bn1(self.conv1(x))))
        y = torch.relu(self.conv2(y))
        z = self.conv3(y)
        h = torch.relu(z).contiguous().view(z.size(0), -1)
        return self.fc2(torch.relu(self.fc1(h))), z


class Block(nn.Module):
    """A ResNet BasicBlock: ``relu(conv2(relu(conv1(x))) + down(x))``."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.down: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.down = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x)))))
        return torch.relu(y + self.down(x))


class ResNetLike(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, 1, 1), nn.BatchNorm2d(16), nn.ReLU(inplace=True))
        self.blocks = nn.Sequential(Block(16, 16, 1), Block(16, 32, 2), Block(32, 32, 1))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(32, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(self.blocks(self.stem(x))), 1))


class Branchy(nn.Module):
    """Data-dependent control flow at the top (untraceable); a traceable Sequential inside."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU())
        self.head = nn.Conv2d(8, 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.body(x)
        if float(y.mean()) > 0:
            y = y * 2
        return self.head(y)


class SharedShortcut(nn.Module):
    """The add's shortcut is also returned after it: the fused sum must not overwrite it."""

    def __init__(self) -> None:
        super().__init__()
        self.conv0 = nn.Conv2d(3, 8, 3, padding=1)
        self.conv1 = nn.Conv2d(8, 8, 3, padding=1)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        s = torch.relu(self.conv0(x))
        y = torch.relu(self.conv2(torch.relu(self.conv1(s))) + s)
        return self.conv1(y), s


def randomized(model: nn.Module) -> nn.Module:
    """Non-trivial BatchNorm statistics, eval mode."""
    g = gen(7)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            n = m.num_features
            m.running_mean.copy_(0.1 * torch.randn(n, generator=g))
            m.running_var.copy_(0.5 + torch.rand(n, generator=g))
            m.weight.data.copy_(0.5 + torch.rand(n, generator=g))
            m.bias.data.copy_(0.1 * torch.randn(n, generator=g))
    return model.eval()


def quantized(build, size: int = 16):
    torch.manual_seed(0)
    model = randomized(build())
    calibration = [torch.randn(4, 3, size, size, generator=gen(i)) for i in range(4)]
    result = quantize(model, QuantConfig(mode="static", fold_batchnorm=True), calibration=calibration, validate=False)
    return model, result, calibration


def outputs(model: nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    with torch.inference_mode():
        y = model(x)
    return list(y) if isinstance(y, tuple) else [y]


def modules_of(gm: nn.Module, kind: type) -> list[nn.Module]:
    return [m for m in gm.modules() if isinstance(m, kind)]


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("batch", [1, 3])
def test_chain_passes_uint8_between_int8_layers(layout, batch):
    model, result, calibration = quantized(Chain)
    optimized = optimize_int8(result.model, calibration[0])
    report = optimized.int8_report
    assert isinstance(report, Int8Report) and isinstance(optimized, torch.fx.GraphModule)
    # conv1 (+ReLU) -> MaxPool on codes -> conv2 (+ReLU) -> conv3 (float: also an output) ->
    # ReLU, view -> fc1 (+ReLU) in uint8 -> fc2.
    assert report.layers == {
        "conv1": "uint8 -> uint8+relu",
        "conv2": "uint8 -> uint8+relu",
        "conv3": "uint8 -> float32",
        "fc1": "uint8 -> uint8+relu",
        "fc2": "uint8 -> float32",
    }
    assert report.fused == {"conv+relu": 2, "linear+relu": 1}
    assert len(modules_of(optimized, CodesPool)) == 1 and len(modules_of(optimized, Quantize)) == 2
    assert report.uint8_edges == 8  # x->conv1->pool->conv2->conv3; q(relu z)->contiguous->view->fc1->fc2
    assert report.sqnr_db >= CHAIN_DB

    x = torch.randn(batch, 3, 16, 16, generator=gen(11)).contiguous(memory_format=LAYOUTS[layout])
    expected, got, exact = outputs(result.model, x), outputs(optimized, x), outputs(model, x)
    for e, g, f in zip(expected, got, exact, strict=True):
        assert g.shape == e.shape and g.dtype == e.dtype == torch.float32
        assert sqnr_db(e, g) >= CHAIN_DB
        assert sqnr_db(f, g) >= sqnr_db(f, e) - FLOAT_LOSS_DB
    # The float output leaves the int8 region in the layout the unrewritten model gives it.
    z, z_expected = got[1], expected[1]
    assert z.is_contiguous() == z_expected.is_contiguous()
    assert z.is_contiguous(memory_format=torch.channels_last) == z_expected.is_contiguous(
        memory_format=torch.channels_last
    )


@pytest.mark.parametrize("layout", LAYOUTS)
def test_residual_block_fuses_add_and_relu(layout):
    model, result, calibration = quantized(ResNetLike)
    optimized = optimize_int8(result.model, calibration[0])
    report = optimized.int8_report
    assert report.fused == {"conv+relu": 4, "conv+add+relu": 3}
    # Identity shortcuts arrive as codes (the grid their conv1 reads); the downsampling one is a
    # convolution feeding only the add (no grid known): float32, and the add's output quantized once.
    assert report.layers["blocks.0.conv2"] == "uint8 -> uint8 +add(uint8 shortcut)+relu"
    assert report.layers["blocks.1.down.0"] == "uint8 -> float32"
    assert report.layers["blocks.1.conv2"] == "uint8 -> uint8 +add(float32 shortcut)+relu"
    assert report.layers["blocks.2.conv2"] == "uint8 -> float32 +add(uint8 shortcut)+relu"
    assert all(not m.clone_accum for m in modules_of(optimized, Int8ConvAdd))
    assert len(modules_of(optimized, Int8Conv)) == 8 and len(modules_of(optimized, Int8Linear)) == 1
    assert report.sqnr_db >= RESIDUAL_DB

    for batch in (1, 4):
        x = torch.randn(batch, 3, 16, 16, generator=gen(12)).contiguous(memory_format=LAYOUTS[layout])
        (e,), (g,), (f,) = outputs(result.model, x), outputs(optimized, x), outputs(model, x)
        assert g.shape == e.shape == (batch, 4) and g.dtype == torch.float32
        assert sqnr_db(e, g) >= RESIDUAL_DB
        assert sqnr_db(f, g) >= sqnr_db(f, e) - FLOAT_LOSS_DB


def test_shortcut_read_after_the_add_is_not_overwritten():
    _, result, calibration = quantized(SharedShortcut)
    optimized = optimize_int8(result.model, calibration[0])
    (fused,) = modules_of(optimized, Int8ConvAdd)
    assert fused.clone_accum  # ``s`` is returned after the add: the sum post-op works on a copy
    x = torch.randn(2, 3, 16, 16, generator=gen(13))
    (e_y, e_s), (g_y, g_s) = outputs(result.model, x), outputs(optimized, x)
    assert sqnr_db(e_s, g_s) >= CHAIN_DB
    assert sqnr_db(e_y, g_y) >= RESIDUAL_DB


def test_untraceable_model_falls_back_part_by_part():
    _, result, calibration = quantized(Branchy)
    optimized = optimize_int8(result.model, calibration[0])
    report = optimized.int8_report
    assert not isinstance(optimized, torch.fx.GraphModule)
    assert any(r.startswith("model: not traceable by torch.fx") for r in report.reasons), report.reasons
    # The traceable child is rewritten; the head (called in the untraced forward) stays as it was.
    assert isinstance(optimized.body, torch.fx.GraphModule) and optimized.head is result.model.head
    assert report.layers == {"body.0": "uint8 -> uint8+relu", "body.2": "uint8 -> float32+relu"}
    for batch in (1, 3):
        x = torch.randn(batch, 3, 16, 16, generator=gen(14))
        (e,), (g,) = outputs(result.model, x), outputs(optimized, x)
        assert g.shape == e.shape and sqnr_db(e, g) >= CHAIN_DB


def test_model_and_saved_file_unchanged_and_a_loaded_model_rewrites_alike(tmp_path):
    _, result, calibration = quantized(ResNetLike)
    before = {k: v.clone() for k, v in result.model.state_dict().items()}
    save_quantized(result, tmp_path / "before.safetensors")
    optimized = optimize_int8(result.model, calibration[0])
    outputs(optimized, calibration[1])
    save_quantized(result, tmp_path / "after.safetensors")
    assert (tmp_path / "before.safetensors").read_bytes() == (tmp_path / "after.safetensors").read_bytes()
    after = result.model.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    assert not any(isinstance(m, (Int8Conv, Quantize, CodesReLU)) for m in result.model.modules())

    loaded = optimize_int8(load_quantized(tmp_path / "after.safetensors", model=ResNetLike().eval()), calibration[0])
    assert loaded.int8_report.layers == optimized.int8_report.layers
    for e, g in zip(outputs(optimized, calibration[2]), outputs(loaded, calibration[2]), strict=True):
        assert torch.equal(e, g)


def test_check_raises_below_the_threshold():
    _, result, calibration = quantized(ResNetLike)
    with pytest.raises(ValidationFailed, match=r"output 0 is .* dB from the unrewritten model's"):
        optimize_int8(result.model, calibration[0], min_sqnr_db=500.0)


def test_model_without_static_layers_is_left_as_it_is():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU()).eval()
    dynamic = quantize(model, QuantConfig(mode="dynamic"), validate=False).model
    optimized = optimize_int8(dynamic, torch.randn(1, 3, 8, 8))
    assert optimized.int8_report.layers == {} and optimized[0] is dynamic[0]


@pytest.mark.parametrize("build", [Chain, ResNetLike])
def test_without_torch_quantized_tensors(build, monkeypatch):
    """Codes are pooled and dequantized without torch's (deprecated) quantized tensors too."""
    _, result, calibration = quantized(build)
    optimized = optimize_int8(result.model, calibration[0])
    x = torch.randn(2, 3, 16, 16, generator=gen(15)).contiguous(memory_format=torch.channels_last)
    with_quantized = outputs(optimized, x)
    monkeypatch.delattr(torch, "_empty_affine_quantized")
    monkeypatch.delattr(torch, "quantize_per_tensor")
    for e, g in zip(with_quantized, outputs(optimized, x), strict=True):
        assert g.shape == e.shape and sqnr_db(e, g) >= CHAIN_DB
