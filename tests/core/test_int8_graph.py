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
from mono_quant_core.int8_graph import (
    CodesAvgPool,
    CodesPool,
    CodesReLU,
    Grid,
    Int8Conv,
    Int8ConvAdd,
    Int8Linear,
    Quantize,
)
from mono_quant_core.tensor import sqnr_db
from mono_quant_core.tensor.activations import activation_qparams_from_range

#: Conv -> ReLU -> MaxPool -> Conv chains: the consumer reads the codes it would have rounded its
#: float input to (up to ties of the rounding), so the rewritten model is close to exact.
CHAIN_DB = 60.0
#: With residual adds the shortcut is rounded to its 8-bit grid (the one extra rounding).
RESIDUAL_DB = 30.0
#: An output only pooled is rounded to a grid calibrated on the example inputs (the extra rounding
#: of a value the unrewritten model keeps float; averaging by the pool shrinks its error).
POOLED_DB = 40.0
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


class Pooled(nn.Module):
    """The bench's wide CNN in small: Conv+BN -> ReLU -> Conv -> ReLU -> MaxPool -> average pool ->
    Flatten -> Linear; the last convolution's output reaches the Linear only through pools.
    ``avg``: ``"adaptive"`` (global average pool), ``"plain"`` (AvgPool2d(2)) or ``"padded"``
    (AvgPool2d counting its zero padding in: not an average of codes); ``relu``: a ReLU after
    conv2 (without it, conv2's output grid has a non-zero zero point)."""

    def __init__(self, avg: str = "adaptive", relu: bool = True) -> None:
        super().__init__()
        self.relu = relu
        self.conv1 = nn.Conv2d(3, 16, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(16)
        self.conv2 = nn.Conv2d(16, 32, 3, stride=2, padding=1)
        self.pool = nn.MaxPool2d(2)
        pools = {"adaptive": nn.AdaptiveAvgPool2d(1), "plain": nn.AvgPool2d(2), "padded": nn.AvgPool2d(2, padding=1)}
        self.avg = pools[avg]
        self.fc = nn.Linear(32 * {"adaptive": 1, "plain": 2 * 2, "padded": 3 * 3}[avg], 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv2(torch.relu(self.bn1(self.conv1(x))))
        y = torch.relu(y) if self.relu else y
        return self.fc(torch.flatten(self.avg(self.pool(y)), 1))


class BranchyPooled(nn.Module):
    """Untraceable at the top; ``spare`` runs only on single samples (not on a batch example)."""

    def __init__(self) -> None:
        super().__init__()
        self.features = Pooled()
        self.spare = Pooled()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if int(x.shape[0]) == 1:
            return self.spare(x)
        return self.features(x)


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


def agrees_at_batches(
    result, optimized, model, seed: int, classes: int, min_db: float, layout: str = "contiguous", batches=(1, 4)
) -> None:
    """The rewrite against the unrewritten model (``min_db``) on new inputs of each batch size,
    float32 out of ``classes`` columns, and no further from the float model than it (within
    FLOAT_LOSS_DB)."""
    for batch in batches:
        x = torch.randn(batch, 3, 16, 16, generator=gen(seed)).contiguous(memory_format=LAYOUTS[layout])
        (e,), (g,), (f,) = outputs(result.model, x), outputs(optimized, x), outputs(model, x)
        assert g.shape == e.shape == (batch, classes) and g.dtype == torch.float32
        assert sqnr_db(e, g) >= min_db
        assert sqnr_db(f, g) >= sqnr_db(f, e) - FLOAT_LOSS_DB


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


@pytest.mark.parametrize("output_grids", [True, False])
@pytest.mark.parametrize("layout", LAYOUTS)
def test_residual_block_fuses_add_and_relu(layout, output_grids):
    model, result, calibration = quantized(ResNetLike)
    optimized = optimize_int8(result.model, calibration[0], output_grids=output_grids)
    report = optimized.int8_report
    # Identity shortcuts arrive as codes (the grid their conv1 reads).
    assert report.layers["blocks.0.conv2"] == "uint8 -> uint8 +add(uint8 shortcut)+relu"
    if output_grids:
        # The downsampling shortcut (a convolution feeding only the add) and the last block's
        # output (only pooled) are uint8 on output grids calibrated on the example.
        assert report.fused == {"conv+relu": 4, "conv+add+relu": 3, "avg-pool on codes": 1}
        assert report.layers["blocks.1.down.0"] == "uint8 -> uint8"
        assert report.layers["blocks.1.conv2"] == "uint8 -> uint8 +add(uint8 shortcut)+relu"
        assert report.layers["blocks.2.conv2"] == "uint8 -> uint8 +add(uint8 shortcut)+relu"
        assert set(report.output_grids) == {"blocks.1.down.0", "blocks.2.conv2"}
    else:
        # No grid known: the shortcut float32, the add's output quantized once; the last block float32.
        assert report.fused == {"conv+relu": 4, "conv+add+relu": 3}
        assert report.layers["blocks.1.down.0"] == "uint8 -> float32"
        assert report.layers["blocks.1.conv2"] == "uint8 -> uint8 +add(float32 shortcut)+relu"
        assert report.layers["blocks.2.conv2"] == "uint8 -> float32 +add(uint8 shortcut)+relu"
        assert report.output_grids == {}
    assert all(not m.clone_accum for m in modules_of(optimized, Int8ConvAdd))
    assert len(modules_of(optimized, Int8Conv)) == 8 and len(modules_of(optimized, Int8Linear)) == 1
    assert report.sqnr_db >= RESIDUAL_DB

    agrees_at_batches(result, optimized, model, 12, 4, RESIDUAL_DB, layout)


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
    with pytest.raises(ValidationFailed, match=r"output 0 is .* dB from the unrewritten model's") as raised:
        optimize_int8(result.model, calibration[0], min_sqnr_db=500.0)
    assert "blocks.1.down.0, blocks.2.conv2 (output_grids=False keeps them float)" in str(raised.value)


def test_model_without_static_layers_is_left_as_it_is():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU()).eval()
    dynamic = quantize(model, QuantConfig(mode="dynamic"), validate=False).model
    optimized = optimize_int8(dynamic, torch.randn(1, 3, 8, 8))
    assert optimized.int8_report.layers == {} and optimized[0] is dynamic[0]


def min_max_grid(x: torch.Tensor) -> Grid:
    """The uint8 grid of the engine's min/max activation observer for ``x``."""
    scale, zero_point = activation_qparams_from_range(x.amin(), x.amax())
    return Grid(float(scale), int(zero_point) + 128)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_output_only_pooled_gets_a_grid_calibrated_on_the_example(layout):
    model, result, calibration = quantized(Pooled)
    example = torch.cat(calibration[:2])
    optimized = optimize_int8(result.model, example)
    report = optimized.int8_report
    # conv2's output reaches fc only through max-pool and the average pool: no consumer's grid
    # describes it, so it gets its own, max-pooled and averaged on codes.
    assert report.layers == {"conv1": "uint8 -> uint8+relu", "conv2": "uint8 -> uint8+relu", "fc": "uint8 -> float32"}
    assert report.fused == {"conv+relu": 2, "avg-pool on codes": 1}
    assert len(modules_of(optimized, CodesPool)) == 1 and len(modules_of(optimized, CodesAvgPool)) == 1
    seen: list[torch.Tensor] = []
    hook = result.model.conv2.register_forward_hook(lambda m, i, o: seen.append(torch.relu(o)))
    try:
        outputs(result.model, example)
    finally:
        hook.remove()
    assert report.output_grids == {"conv2": min_max_grid(seen[0])}
    assert report.output_grids["conv2"].zero_point == 0  # after ReLU the range starts at 0
    assert report.sqnr_db >= POOLED_DB

    agrees_at_batches(result, optimized, model, 16, 5, POOLED_DB, layout, batches=(1, 5))


def test_average_of_codes_with_a_zero_point():
    """No ReLU before the pools: conv2's own grid has a non-zero zero point, which the average of
    codes must take off (a plain AvgPool2d this time)."""
    _, result, calibration = quantized(lambda: Pooled("plain", relu=False))
    optimized = optimize_int8(result.model, torch.cat(calibration[:2]))
    report = optimized.int8_report
    assert report.layers["conv2"] == "uint8 -> uint8" and report.fused["avg-pool on codes"] == 1
    assert report.output_grids["conv2"].zero_point > 10
    x = torch.randn(3, 3, 16, 16, generator=gen(17))
    (e,), (g,) = outputs(result.model, x), outputs(optimized, x)
    assert sqnr_db(e, g) >= POOLED_DB


def test_output_grids_off_or_a_padded_average_keep_the_output_float():
    _, result, calibration = quantized(Pooled)
    off = optimize_int8(result.model, calibration[0], output_grids=False)
    assert off.int8_report.layers["conv2"] == "uint8 -> float32+relu" and off.int8_report.output_grids == {}
    assert not modules_of(off, CodesAvgPool) and off.int8_report.sqnr_db >= CHAIN_DB
    # An average counting zero padding in is no average of codes (code 0 is not the value 0).
    _, result, calibration = quantized(lambda: Pooled("padded"))
    padded = optimize_int8(result.model, calibration[0])
    assert padded.int8_report.layers["conv2"] == "uint8 -> float32+relu" and padded.int8_report.output_grids == {}
    assert not modules_of(padded, CodesAvgPool) and padded.int8_report.sqnr_db >= CHAIN_DB


def test_output_grid_of_a_part_calibrated_on_its_inputs_from_the_example():
    torch.manual_seed(0)
    model = randomized(BranchyPooled())
    calibration = [torch.randn(b, 3, 16, 16, generator=gen(20 + i)) for i, b in enumerate((4, 1, 4, 1))]
    config = QuantConfig(mode="static", fold_batchnorm=True)
    result = quantize(model, config, calibration=calibration, validate=False)
    example = torch.cat(calibration[::2])
    optimized = optimize_int8(result.model, example)
    report = optimized.int8_report
    assert any(r.startswith("model: not traceable by torch.fx") for r in report.reasons), report.reasons
    # features runs on the example: its conv2's grid is measured on the input features got.
    seen: list[torch.Tensor] = []
    hook = result.model.features.conv2.register_forward_hook(lambda m, i, o: seen.append(torch.relu(o)))
    try:
        outputs(result.model, example)
    finally:
        hook.remove()
    assert report.output_grids == {"features.conv2": min_max_grid(seen[0])}
    assert report.layers["features.conv2"] == "uint8 -> uint8+relu"
    # spare never runs on the example: no grid to calibrate, float32 out, and a reason.
    assert report.layers["spare.conv2"] == "uint8 -> float32+relu"
    assert any(
        r.startswith("spare.conv2: no consumer's grid describes its output and no example") for r in report.reasons
    )
    for batch in (1, 3):
        x = torch.randn(batch, 3, 16, 16, generator=gen(21))
        (e,), (g,) = outputs(result.model, x), outputs(optimized, x)
        assert g.shape == e.shape and sqnr_db(e, g) >= POOLED_DB


@pytest.mark.parametrize("build", [Chain, ResNetLike, Pooled])
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
