"""QuantizedConvTranspose1d/2d: output SQNR per mode, output_padding / output_size, groups, file round trip.

Floors (output SQNR against the float layer): int8 weight-only >= 40 dB, int8 dynamic and static >= 35 dB,
int4 (per-channel or per-group, weight-only) >= 18 dB, fp16 >= 60 dB.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from mono_quant_core import QuantConfig, load_quantized, quantize, save_quantized
from mono_quant_core.modules import QuantizedConvTranspose1d, QuantizedConvTranspose2d, replacement_for
from mono_quant_core.tensor import sqnr_db

CONFIGS = {
    "int8-weight-only": (QuantConfig(mode="weight-only"), 40.0),
    "int8-dynamic": (QuantConfig(mode="dynamic"), 35.0),
    "int4-channel": (QuantConfig(dtype="int4", mode="weight-only"), 18.0),
    "int4-group": (QuantConfig(dtype="int4", mode="weight-only", granularity="per-group", group_size=16), 18.0),
    "fp16": (QuantConfig(dtype="fp16"), 60.0),
}


def cases():
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(1)
    return [
        (
            nn.ConvTranspose1d(6, 10, 4, stride=2, padding=1, output_padding=1).eval(),
            torch.randn(2, 6, 15, generator=g),
        ),
        (
            nn.ConvTranspose2d(8, 12, 3, stride=2, padding=1, output_padding=1, groups=2, dilation=1).eval(),
            torch.randn(2, 8, 7, 7, generator=g),
        ),
        (
            nn.ConvTranspose2d(4, 6, (3, 2), stride=(2, 1), dilation=2, bias=False).eval(),
            torch.randn(1, 4, 5, 6, generator=g),
        ),
    ]


@pytest.mark.parametrize("config_name", CONFIGS)
def test_output_sqnr_and_per_output_channel_scales(config_name):
    config, floor = CONFIGS[config_name]
    for module, x in cases():
        q = replacement_for(module).from_float(module, config).eval()
        with torch.inference_mode():
            db = sqnr_db(module(x), q(x))
        assert db >= floor, f"{config_name} {module}: {db:.1f} dB"
        if config.granularity == "per-channel" and not config.is_cast:
            # Weight [in, out / groups, k...]: one scale per output channel of a group (axis 1).
            assert q.weight_scale.shape == (module.weight.shape[1],) and q.spec.axis == 1
            assert q.quant_meta()["axis"] == 1


def test_output_size_is_honoured_and_checked():
    module, x = cases()[1]
    q = QuantizedConvTranspose2d.from_float(module, QuantConfig(mode="weight-only"))
    with torch.inference_mode():
        for size in ([13, 13], [14, 14], [2, 12, 14, 13]):
            ref, out = module(x, output_size=size), q(x, output_size=size)
            assert out.shape == ref.shape and sqnr_db(ref, out) >= 40.0
        with pytest.raises(ValueError, match="requested an output size"):
            q(x, output_size=[20, 20])


def test_static_mode_and_to_float():
    module, x = cases()[0]
    q = QuantizedConvTranspose1d.from_float(module, QuantConfig(mode="static"))
    q.set_input_qparams(torch.tensor(float(x.abs().max()) / 127), 0)
    with torch.inference_mode():
        assert sqnr_db(module(x), q(x)) >= 35.0
    plain = QuantizedConvTranspose1d.from_float(module, QuantConfig(mode="weight-only")).to_float()
    assert type(plain) is nn.ConvTranspose1d and plain.output_padding == module.output_padding
    assert sqnr_db(module.weight, plain.weight) >= 40.0


@pytest.mark.parametrize("ext", [".safetensors", ".pt"])
@pytest.mark.parametrize("mode", ["dynamic", "static", "int4"])
def test_decoder_round_trips_bit_exactly(tmp_path, ext, mode):
    torch.manual_seed(0)

    def build():
        torch.manual_seed(0)
        return nn.Sequential(
            nn.ConvTranspose2d(8, 16, 4, stride=2, padding=1),
            nn.ReLU(),
            nn.ConvTranspose2d(16, 3, 4, stride=2, padding=1),
        ).eval()

    model = build()
    config = QuantConfig(dtype="int4", mode="weight-only") if mode == "int4" else QuantConfig(mode=mode)
    g = torch.Generator().manual_seed(2)
    samples = [torch.randn(2, 8, 6, 6, generator=g) for _ in range(10)]
    result = quantize(model, config, calibration=samples)
    report = result.report
    assert report.passed and report.load_test_passed, report.failures
    assert [layer.type for layer in report.layers] == ["ConvTranspose2d"] * 2
    assert report.output_sqnr_db >= (18.0 if mode == "int4" else 30.0)
    assert report.coverage["share"] == 1.0
    path = tmp_path / f"q{ext}"
    save_quantized(result, path)
    loaded = load_quantized(path, model=build())
    state, again = result.model.state_dict(), loaded.state_dict()
    assert list(state) == list(again) and all(torch.equal(state[k], again[k]) for k in state)
    with torch.inference_mode():
        assert torch.equal(result.model(samples[0]), loaded(samples[0]))
