"""QuantizedConv1d/2d/3d: every convolution option is kept; modes and dtypes."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from mono_quant_core.config import QuantConfig
from mono_quant_core.modules import QuantizedConv1d, QuantizedConv2d, QuantizedConv3d
from mono_quant_core.tensor import activation_qparams, sqnr_db

CONVS = [
    (QuantizedConv1d, nn.Conv1d(6, 16, 4, stride=2, padding=3, dilation=2, padding_mode="circular"), (2, 6, 31)),
    (QuantizedConv2d, nn.Conv2d(8, 16, (3, 5), padding="same", groups=4, padding_mode="replicate"), (2, 8, 11, 13)),
    (QuantizedConv2d, nn.Conv2d(8, 12, 1, bias=False), (1, 8, 5, 5)),
    (QuantizedConv3d, nn.Conv3d(4, 8, 3, stride=(1, 2, 1), padding=(1, 0, 2), padding_mode="reflect"), (2, 4, 6, 7, 6)),
]


@pytest.mark.parametrize("cls,conv,shape", CONVS, ids=lambda v: getattr(v, "__name__", None))
def test_options_are_kept(cls, conv, shape):
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(0))
    q = cls.from_float(conv, QuantConfig(mode="weight-only"))
    plain = q.to_float()
    for name in ("stride", "padding", "dilation", "groups", "padding_mode", "kernel_size"):
        assert getattr(plain, name) == getattr(conv, name), name
    with torch.inference_mode():
        y = q(x)
        assert y.shape == conv(x).shape
        # Same weights, same options: the module equals the float conv of its dequantized weight.
        assert torch.allclose(y, plain(x), rtol=1e-5, atol=1e-6)
        assert sqnr_db(conv(x), y) >= 40.0


@pytest.mark.parametrize(
    "config,floor",
    [
        (dict(mode="dynamic"), 35.0),
        (dict(mode="static"), 35.0),
        (dict(mode="weight-only", scheme="asymmetric", granularity="per-group", group_size=24), 40.0),
        (dict(dtype="int4", mode="weight-only", granularity="per-group", group_size=24), 17.0),
        (dict(dtype="fp16"), 60.0),
        (dict(dtype="bf16"), 45.0),
    ],
)
def test_modes_and_dtypes(config, floor):
    torch.manual_seed(0)
    conv = nn.Conv2d(8, 16, 3, padding=1)
    x = torch.randn(2, 8, 10, 10, generator=torch.Generator().manual_seed(1))
    q = QuantizedConv2d.from_float(conv, QuantConfig(**config))
    if q.mode == "static":
        q.set_input_qparams(*activation_qparams(x))
    with torch.inference_mode():
        assert sqnr_db(conv(x), q(x)) >= floor
    expected = {"fp16": "upcast", "bf16": "upcast"}.get(config.get("dtype", ""), "dequantize")
    assert q.kernel == ("onednn-qconv" if q.mode == "static" else expected)  # static: the int8 kernel


def test_dynamic_mode_quantizes_each_sample_of_inputs():
    torch.manual_seed(0)
    conv = nn.Conv1d(4, 8, 3)
    x = torch.randn(2, 4, 20)
    x[1] *= 30  # a louder second sample: it does not set the first one's grid
    dynamic = QuantizedConv1d.from_float(conv, QuantConfig(mode="dynamic"))
    weight_only = QuantizedConv1d.from_float(conv, QuantConfig(mode="weight-only"))
    rows = []
    for sample in x:  # each sample on the grid of its own range
        scale, zp = activation_qparams(sample)
        rows.append((torch.clamp(torch.round(sample / scale) + zp, -128, 127) - zp) * scale)
    x_q = torch.stack(rows)
    assert torch.equal(dynamic(x), weight_only(x_q))
    assert not torch.equal(dynamic(x), weight_only(x))
