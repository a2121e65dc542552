"""QuantizedLinear: every dtype / mode / scheme / granularity, state-dict layout, checks."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from mono_quant_core.config import QuantConfig
from mono_quant_core.errors import ConfigError, QuantizedFileError
from mono_quant_core.modules import QuantizedLinear
from mono_quant_core.tensor import activation_qparams, sqnr_db


def case():
    torch.manual_seed(0)
    x = torch.randn(16, 256, generator=torch.Generator().manual_seed(1))
    return nn.Linear(256, 128).eval(), x


@pytest.mark.parametrize(
    "config,floor",
    [
        (dict(mode="dynamic"), 35.0),
        (dict(mode="dynamic", scheme="asymmetric", granularity="per-tensor"), 35.0),
        (dict(mode="static"), 35.0),
        (dict(mode="weight-only"), 40.0),
        (dict(mode="weight-only", scheme="asymmetric"), 40.0),
        (dict(mode="weight-only", granularity="per-tensor"), 35.0),
        (dict(mode="weight-only", granularity="per-group", group_size=64), 40.0),
        (dict(dtype="int4", mode="weight-only", granularity="per-group", group_size=128), 17.0),
        (dict(dtype="int4", mode="weight-only", scheme="asymmetric", granularity="per-group", group_size=32), 17.0),
        (dict(dtype="fp16"), 60.0),
        (dict(dtype="bf16"), 45.0),
    ],
)
def test_output_sqnr(config, floor):
    float_layer, x = case()
    q = QuantizedLinear.from_float(float_layer, QuantConfig(**config))
    if q.mode == "static":
        q.set_input_qparams(*activation_qparams(x))
    with torch.inference_mode():
        db = sqnr_db(float_layer(x), q(x))
    assert db >= floor, f"{config}: {db:.1f} dB ({q.kernel})"


@pytest.mark.parametrize(
    "config,expected",
    [
        (dict(), {"weight": ("int8", (128, 256)), "weight_scale": ("float32", (128,))}),
        (
            dict(scheme="asymmetric", granularity="per-tensor"),
            {"weight": ("int8", (128, 256)), "weight_scale": ("float32", (1,)), "weight_zero_point": ("int8", (1,))},
        ),
        (
            dict(mode="static"),
            {
                "weight": ("int8", (128, 256)),
                "weight_scale": ("float32", (128,)),
                "input_scale": ("float32", (1,)),
                "input_zero_point": ("int32", (1,)),
            },
        ),
        (
            dict(dtype="int4", mode="weight-only", granularity="per-group", group_size=96),
            {"weight": ("uint8", (128, 128)), "weight_scale": ("float32", (128, 3))},
        ),
        (dict(dtype="bf16"), {"weight": ("bfloat16", (128, 256))}),
    ],
)
def test_state_dict_layout(config, expected):
    float_layer, _ = case()
    q = QuantizedLinear.from_float(float_layer, QuantConfig(**config))
    got = {k: (str(v.dtype).removeprefix("torch."), tuple(v.shape)) for k, v in q.state_dict().items()}
    bias_dtype = "bfloat16" if config.get("dtype") == "bf16" else "float32"
    assert got == {**expected, "bias": (bias_dtype, (128,))}


def test_bias_shares_float_storage():
    float_layer, _ = case()
    q = QuantizedLinear.from_float(float_layer, QuantConfig())
    assert q.bias is not float_layer.bias and q.bias.data_ptr() == float_layer.bias.data_ptr()
    assert q.weight.data_ptr() != float_layer.weight.data_ptr()


def test_no_bias():
    torch.manual_seed(0)
    float_layer = nn.Linear(64, 32, bias=False)
    x = torch.randn(4, 64)
    for mode in ("dynamic", "weight-only"):
        q = QuantizedLinear.from_float(float_layer, QuantConfig(mode=mode))
        assert "bias" not in q.state_dict() and sqnr_db(float_layer(x).detach(), q(x)) >= 35.0
        assert q.to_float().bias is None


def test_weight_range_problems():
    float_layer, x = case()
    q = QuantizedLinear.from_float(float_layer, QuantConfig(mode="static"))
    assert q.weight_range_problems() == ["input_scale: not finite and positive (calibration did not set it)"]
    q.set_input_qparams(*activation_qparams(x))
    assert q.weight_range_problems() == []
    q.weight[0, 0] = -128  # outside the symmetric range
    q.weight_scale[3] = float("inf")
    assert q.weight_range_problems() == ["weight: codes outside [-127, 127]", "weight_scale: not finite and positive"]
    cast = QuantizedLinear.from_float(nn.Linear(4, 4), QuantConfig(dtype="fp16"))
    cast.weight[0, 0] = float("inf")
    assert cast.weight_range_problems() == ["weight: not finite after the fp16 cast (values beyond its range)"]


def test_input_qparams_only_in_static_mode():
    float_layer, _ = case()
    q = QuantizedLinear.from_float(float_layer, QuantConfig(mode="dynamic"))
    with pytest.raises(ConfigError, match="mode"):
        q.set_input_qparams(0.1, 0)


def test_static_inputs_are_clamped_to_the_calibrated_range():
    float_layer, x = case()
    q = QuantizedLinear.from_float(float_layer, QuantConfig(mode="static"))
    q.set_input_qparams(torch.tensor(1.0 / 255), torch.tensor(-128))  # grid covers [0, 1]
    clipped = torch.clamp(torch.round(x * 255) / 255, 0, 1)
    # The int8 kernel against the dequantized weight on the clipped input (unclipped: about 0 dB).
    reference = torch.nn.functional.linear(clipped, q.dequantized_weight(), float_layer.bias)
    assert sqnr_db(reference, q(x).detach()) >= 60.0


def test_from_meta_checks_shape_and_fields():
    float_layer, _ = case()
    meta = QuantizedLinear.from_float(float_layer, QuantConfig()).quant_meta()
    with pytest.raises(QuantizedFileError, match=r"shape: weight is \(128, 256\) in the file but \(128, 64\)"):
        QuantizedLinear.from_meta(meta, nn.Linear(64, 128))
    with pytest.raises(QuantizedFileError, match="'dtype' is missing"):
        QuantizedLinear.from_meta({k: v for k, v in meta.items() if k != "dtype"}, float_layer)
    with pytest.raises(QuantizedFileError, match="dtype"):
        QuantizedLinear.from_meta({**meta, "dtype": "int3"}, float_layer)


def test_from_meta_on_meta_device_then_assign():
    float_layer, x = case()
    q = QuantizedLinear.from_float(float_layer, QuantConfig(mode="weight-only"))
    with torch.device("meta"):
        skeleton = nn.Linear(256, 128)
    fresh = QuantizedLinear.from_meta(q.quant_meta(), skeleton)
    assert fresh.weight.device.type == "meta"
    fresh.load_state_dict(q.state_dict(), assign=True)
    assert torch.equal(fresh(x), q(x))


def test_cast_weights_keep_their_dtype_under_half():
    float_layer, x = case()
    q = QuantizedLinear.from_float(float_layer, QuantConfig(dtype="bf16")).half()
    assert q.weight.dtype == torch.bfloat16 and q.bias.dtype == torch.bfloat16
    y = q(x.half())
    assert y.dtype == torch.float16 and sqnr_db(float_layer(x).detach(), y) >= 40.0


def test_works_with_gradients_enabled():
    float_layer, x = case()
    q = QuantizedLinear.from_float(float_layer, QuantConfig(mode="weight-only"))
    y = q(x.requires_grad_())
    assert y.shape == (16, 128)
