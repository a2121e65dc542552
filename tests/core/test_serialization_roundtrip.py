"""Save → load round trips: every mode × every layer type × both formats, bit-exact outputs."""

from __future__ import annotations

import pytest
import torch

from mono_quant_core import QuantConfig, load_model, load_quantized, quantize, save_quantized
from mono_quant_core.modules.base import QuantizedModule

#: One tiny model with every supported layer type, and a LayerNorm (no replacement: skipped).
ALL_LAYERS_SCRIPT = """
import torch
from torch import nn


class AllLayers(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(20, 8)
        self.lstm = nn.LSTM(8, 8, batch_first=True)
        self.gru = nn.GRU(8, 8, batch_first=True)
        self.conv1 = nn.Conv1d(8, 8, 3, padding=1)
        self.conv2 = nn.Conv2d(2, 4, 3, padding=1)
        self.conv3 = nn.Conv3d(2, 2, 3, padding=1)
        self.norm = nn.LayerNorm(14)
        self.head = nn.Linear(14, 6)

    def forward(self, tokens, image, volume):
        h, _ = self.lstm(self.embed(tokens))
        g, _ = self.gru(h)
        a = self.conv1(g.transpose(1, 2)).mean(-1)
        b = self.conv2(image).mean((2, 3))
        c = self.conv3(volume).mean((2, 3, 4))
        return self.head(self.norm(torch.cat([a, b, c], 1)))
"""

LAYER_TYPES = {
    "embed": "Embedding",
    "lstm": "LSTM",
    "gru": "GRU",
    "conv1": "Conv1d",
    "conv2": "Conv2d",
    "conv3": "Conv3d",
    "head": "Linear",
}

MODES = {
    "int8-weight-only": QuantConfig(mode="weight-only"),
    "int8-dynamic": QuantConfig(mode="dynamic"),
    "int8-static": QuantConfig(mode="static"),
    "int4": QuantConfig(dtype="int4", mode="weight-only", granularity="per-group", group_size=4),
    "fp16": QuantConfig(dtype="fp16"),
    "bf16": QuantConfig(dtype="bf16"),
}


def samples(n: int = 6, seed: int = 1) -> list[tuple[torch.Tensor, ...]]:
    g = torch.Generator().manual_seed(seed)
    return [
        (
            torch.randint(0, 20, (2, 5), generator=g),
            torch.randn(2, 2, 6, 6, generator=g),
            torch.randn(2, 2, 3, 3, 3, generator=g),
        )
        for _ in range(n)
    ]


@pytest.fixture(scope="module")
def script(tmp_path_factory):
    path = tmp_path_factory.mktemp("all_layers") / "all_layers.py"
    path.write_text(ALL_LAYERS_SCRIPT)
    return path


def float_model(script):
    torch.manual_seed(0)
    return load_model(script)


def assert_same_model(saved, loaded, inputs) -> None:
    """Same module types, same state (names, dtypes, values), bit-equal outputs."""
    assert not loaded.training
    assert {n: type(m) for n, m in saved.named_modules()} == {n: type(m) for n, m in loaded.named_modules()}
    a, b = saved.state_dict(), loaded.state_dict()
    assert list(a) == list(b)
    for k in a:
        assert a[k].dtype == b[k].dtype and torch.equal(a[k], b[k]), k
        assert b[k].device.type == "cpu", k
    with torch.inference_mode():
        for x in inputs:
            assert torch.equal(saved(*x), loaded(*x))


@pytest.mark.parametrize("ext", [".safetensors", ".pt"])
@pytest.mark.parametrize("mode", list(MODES))
def test_round_trip_is_bit_exact(script, tmp_path, mode, ext):
    model = float_model(script)
    data = samples()
    result = quantize(model, MODES[mode], calibration=data)
    assert {layer.name for layer in result.report.layers} == set(LAYER_TYPES)
    assert [s.name for s in result.report.skipped] == ["norm"]
    path = tmp_path / f"model{ext}"
    written = save_quantized(result, path)
    assert written == path.stat().st_size == result.report.file_bytes

    from_script = load_quantized(path, script=script)
    assert_same_model(result.model, from_script, data)
    from_instance = load_quantized(path, model=model)
    assert_same_model(result.model, from_instance, data)
    for name in LAYER_TYPES:
        assert isinstance(getattr(from_script, name), QuantizedModule), name
    assert type(from_script.norm) is torch.nn.LayerNorm


@pytest.mark.parametrize(
    "mode,dtypes",
    [
        (
            "int8-dynamic",
            {
                "head.weight": torch.int8,
                "head.weight_scale": torch.float32,
                "conv2.weight": torch.int8,
                "embed.weight": torch.int8,
            },
        ),
        (
            "int8-static",
            {"head.weight": torch.int8, "head.input_scale": torch.float32, "head.input_zero_point": torch.int32},
        ),
        ("int4", {"head.weight": torch.uint8, "head.weight_scale": torch.float32}),
        ("fp16", {"head.weight": torch.float16, "conv3.weight": torch.float16, "norm.weight": torch.float32}),
        ("bf16", {"head.weight": torch.bfloat16}),
    ],
)
def test_file_tensors_follow_the_design_table(script, tmp_path, mode, dtypes):
    from safetensors.torch import load_file

    result = quantize(float_model(script), MODES[mode], calibration=samples())
    path = tmp_path / "m.safetensors"
    save_quantized(result, path)
    tensors = load_file(path)
    for key, dtype in dtypes.items():
        assert tensors[key].dtype == dtype, key
    assert tensors["norm.weight"].dtype == torch.float32  # skipped layers stay as they were
    if mode == "int4":  # two values per byte
        assert tensors["head.weight"].numel() == 14 * 6 // 2


def test_scripted_load_uses_the_recorded_entry_and_leaves_the_script_model_alone(tmp_path):
    script = tmp_path / "two.py"
    script.write_text(
        "from torch import nn\n"
        "def small():\n    return nn.Sequential(nn.Linear(4, 4))\n"
        "def wide(width=8):\n    return nn.Sequential(nn.Linear(4, width), nn.ReLU(), nn.Linear(width, 2))\n"
        "model = nn.Sequential(nn.Linear(4, 3))\n"
    )
    float_m = load_model(script, entry="wide", entry_kwargs={"width": 6})
    result = quantize(float_m, QuantConfig(), calibration=[torch.randn(3, 4)])
    path = tmp_path / "wide.pt"
    save_quantized(result, path)
    loaded = load_quantized(path, script=script)  # entry and kwargs come from the file
    x = torch.randn(5, 4)
    assert torch.equal(loaded(x), result.model(x))
    assert loaded[0].quant_meta()["shape"] == [6, 4]


NEEDS_REAL_TENSORS = {
    # A non-persistent buffer is not in the file: building on the meta device would leave it empty.
    "buffer": "self.register_buffer('mask', torch.tensor([1.0, 0.0, 1.0, 1.0]), persistent=False)\n"
    "        self.gain = 2.0",
    # Reading a tensor's value while building fails on the meta device.
    "item": "self.mask = torch.tensor([1.0, 0.0, 1.0, 1.0])\n        self.gain = float(torch.ones(()) * 2)",
}


@pytest.mark.parametrize("case", list(NEEDS_REAL_TENSORS))
def test_scripts_that_need_real_tensors_fall_back_to_an_ordinary_build(tmp_path, case):
    script = tmp_path / f"odd_{case}.py"
    script.write_text(
        "import torch\nfrom torch import nn\nSHIFT = torch.full((4,), 0.5)\n\n"
        "class Odd(nn.Module):\n    def __init__(self):\n        super().__init__()\n"
        "        self.fc = nn.Linear(4, 4)\n"
        f"        {NEEDS_REAL_TENSORS[case]}\n\n"
        "    def forward(self, x):\n        return self.fc(x) * self.mask * self.gain + SHIFT\n"
    )
    result = quantize(load_model(script), QuantConfig(), calibration=[torch.randn(2, 4)])
    path = tmp_path / "odd.safetensors"
    save_quantized(result, path)
    loaded = load_quantized(path, script=script)
    x = torch.randn(3, 4)
    assert torch.equal(loaded(x), result.model(x))
    assert loaded.mask.device.type == "cpu"
