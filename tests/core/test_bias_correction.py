"""Bias correction: a trained digits CNN gains, a zero-mean error changes nothing, a new bias reloads."""

from __future__ import annotations

import pytest
import torch
from test_quantize import output_sqnr
from torch import nn

from mono_quant_core import QuantConfig, load_quantized, quantize, save_quantized
from mono_quant_core.algorithms.bias_correction import correct
from mono_quant_core.quantizer import build_layer


def digits_cnn(bias: bool = True) -> tuple[nn.Module, list[torch.Tensor], torch.Tensor, torch.Tensor]:
    """A small CNN trained for a few seconds on scikit-learn's digits (seed fixed).

    Returns the model, calibration batches (training images) and the held-out images and labels.
    """
    from sklearn.datasets import load_digits

    digits = load_digits()
    torch.manual_seed(0)
    order = torch.randperm(len(digits.target))
    x = (torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0)[order]
    y = torch.tensor(digits.target)[order]
    model = nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1, bias=bias),
        nn.ReLU(),
        nn.Conv2d(8, 16, 3, padding=1, stride=2, bias=bias),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(2),
        nn.Flatten(),
        nn.Linear(64, 10, bias=bias),
    )
    opt = torch.optim.Adam(model.parameters(), lr=2e-2)
    train_x, train_y = x[:1400], y[:1400]
    for _ in range(8):
        for i in range(0, 1400, 200):
            opt.zero_grad()
            nn.functional.cross_entropy(model(train_x[i : i + 200]), train_y[i : i + 200]).backward()
            opt.step()
    calibration = [train_x[i : i + 64] for i in range(0, 64 * 20, 64)]  # 16 calibrate, 4 validate
    return model.eval(), calibration, x[1400:], y[1400:]


def top1(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.inference_mode():
        return float((model(x).argmax(1) == y).float().mean())


@pytest.fixture(scope="module")
def cnn():
    return digits_cnn()


@pytest.fixture(scope="module")
def cnn_without_bias():
    return digits_cnn(bias=False)


CONFIGS = {
    "int8-weight-only": QuantConfig(mode="weight-only", granularity="per-tensor"),
    "int8-static": QuantConfig(mode="static", granularity="per-tensor"),
    "int4-weight-only": QuantConfig(dtype="int4", mode="weight-only", granularity="per-channel"),
}
#: The output SQNR (held-out digits) bias correction must add.
MIN_GAIN_DB = {"int8-weight-only": 2.0, "int8-static": 2.0, "int4-weight-only": 2.0}


@pytest.mark.parametrize("name", list(CONFIGS))
def test_correction_improves_output_sqnr(cnn, name):
    model, calibration, x, y = cnn
    assert top1(model, x, y) >= 0.9  # the CNN really learned the digits
    config = CONFIGS[name]
    plain = quantize(model, config, calibration=calibration)
    corrected = quantize(model, config.replace(bias_correction=True), calibration=calibration)
    evaluation = list(x.split(100))
    plain_db, corrected_db = (
        output_sqnr(model, plain.model, evaluation),
        output_sqnr(model, corrected.model, evaluation),
    )
    drops = top1(model, x, y) - top1(plain.model, x, y), top1(model, x, y) - top1(corrected.model, x, y)
    print(f"{name}: {plain_db:.2f} -> {corrected_db:.2f} dB, top-1 drop {drops[0]:.4f} -> {drops[1]:.4f}")
    assert corrected_db >= plain_db + MIN_GAIN_DB[name], (plain_db, corrected_db)
    assert drops[1] <= drops[0] + 0.005
    assert all(corrected.report.layer(n).bias_corrected for n in ("0", "2", "6"))
    assert not any(layer.bias_corrected for layer in plain.report.layers)
    assert corrected.report.load_test_passed
    # The float model's biases are never written.
    assert not torch.equal(corrected.model[0].bias, model[0].bias)


def test_zero_mean_error_changes_nothing():
    torch.manual_seed(1)
    linear = nn.Linear(32, 16)
    q = build_layer(linear, QuantConfig(mode="weight-only"), None)
    bias = q.bias.detach().clone()
    # Inputs with exactly zero mean per feature (x and -x): the weight error's mean output is 0.
    xs = [torch.randn(8, 32) for _ in range(4)]
    assert not correct(q, linear, iter([*xs, *[-x for x in xs]]))
    assert torch.equal(q.bias, bias) and not q.bias_corrected
    # A convolution whose weights lie exactly on the int8 grid (power-of-two scale): no error at all.
    conv = nn.Conv2d(3, 4, 3)
    with torch.no_grad():
        codes = torch.randint(-127, 128, conv.weight.shape)
        codes.view(4, -1)[:, 0] = 127
        conv.weight.copy_(codes * 2.0**-7)
    qc = build_layer(conv, QuantConfig(mode="weight-only"), None)
    assert torch.equal(qc.dequantized_weight(), conv.weight)
    before = qc.bias.detach().clone()
    assert not correct(qc, conv, iter([torch.rand(2, 3, 8, 8) + 1.0 for _ in range(3)]))
    assert torch.equal(qc.bias, before)
    # The same layers with a biased input do get a correction (the test can fail).
    assert correct(q, linear, iter([x + 1.0 for x in xs]))
    assert float((q.bias - bias).abs().max()) > 1e-5


@pytest.mark.parametrize("ext", [".safetensors", ".pt"])
def test_a_layer_without_bias_gets_one_and_reloads(cnn_without_bias, tmp_path, ext):
    model, calibration, x, _ = cnn_without_bias
    result = quantize(model, QuantConfig(mode="static", bias_correction=True), calibration=calibration)
    assert result.model[0].bias is not None and result.model[0].bias.shape == (8,)
    assert result.model[6].bias is not None and model[6].bias is None
    assert result.report.load_test_passed
    path = tmp_path / f"cnn{ext}"
    save_quantized(result, path)
    loaded = load_quantized(path, model=model)
    saved, back = result.model.state_dict(), loaded.state_dict()
    assert list(saved) == list(back) and all(torch.equal(saved[k], back[k]) for k in saved)
    assert loaded[0].bias_corrected and loaded[0].quant_meta()["bias_corrected"] is True
    with torch.inference_mode():
        assert torch.equal(result.model(x[:50]), loaded(x[:50]))
