"""Static int8: calibration matters, robust observers beat min/max on outliers, real accuracy holds."""

from __future__ import annotations

import pytest
import torch
from test_quantize import output_sqnr
from torch import nn
from zoo import assert_unchanged, make, snapshot

from mono_quant_core import Cancelled, CancelToken, QuantConfig, quantize
from mono_quant_core.quantizer import split_samples


def held_out(samples):
    _, val, _ = split_samples(len(samples), static=True)
    return [samples[i] for i in val]


@pytest.mark.parametrize("name", ["mlp", "cnn", "transformer"])
def test_static_int8_output_sqnr(name):
    model, samples = make(name)
    samples = samples * 2  # 20 samples: 16 calibrate, 4 validate
    before = snapshot(model)
    result = quantize(model, QuantConfig(mode="static", observer="minmax"), calibration=samples)
    measured = output_sqnr(model, result.model, held_out(samples))
    assert measured >= 30.0, f"{name}: {measured:.1f} dB"
    assert result.report.output_sqnr_db == pytest.approx(measured, abs=1e-6)
    assert result.report.calibration_samples == 16 and result.report.validation_samples == 4
    assert result.report.load_test_passed
    assert_unchanged(model, before)
    assert all(not m._forward_pre_hooks and not m._forward_hooks for m in model.modules())


def test_calibration_data_changes_the_result():
    model, _ = make("mlp")
    g = torch.Generator().manual_seed(5)
    representative = [torch.randn(16, 64, generator=g) for _ in range(20)]
    mismatched = [0.02 * x for x in representative]  # ranges 50x too narrow: real inputs clip
    evaluation = [torch.randn(16, 64, generator=g) for _ in range(5)]
    good = quantize(model, QuantConfig(mode="static"), calibration=representative)
    bad = quantize(model, QuantConfig(mode="static"), calibration=mismatched)
    good_db, bad_db = output_sqnr(model, good.model, evaluation), output_sqnr(model, bad.model, evaluation)
    assert good_db > bad_db + 10.0, (good_db, bad_db)


def heavy_tailed_batches(n, seed):
    """Laplace activations: a dense bulk near 0 and rare large values that stretch min/max."""
    g = torch.Generator().manual_seed(seed)
    batches = []
    for _ in range(n):
        u = torch.rand(64, 256, generator=g) - 0.5
        batches.append(-torch.sign(u) * torch.log1p(-2 * u.abs()))
    return batches


@pytest.mark.parametrize("observer", ["percentile", "histogram"])
def test_robust_observers_beat_minmax_with_outliers(observer):
    # The largest of ~500k calibration values sits near 13 while 99.99 % are below 8.5:
    # min/max spends most of the 256 levels on values that almost never occur.
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(256, 256)).eval()
    calib, evaluation = heavy_tailed_batches(30, 1), heavy_tailed_batches(6, 2)
    minmax = quantize(model, QuantConfig(mode="static", observer="minmax"), calibration=calib, validate=False)
    robust = quantize(
        model, QuantConfig(mode="static", observer=observer, percentile=99.999), calibration=calib, validate=False
    )
    mm_db, rb_db = output_sqnr(model, minmax.model, evaluation), output_sqnr(model, robust.model, evaluation)
    assert rb_db > mm_db + 1.0, (observer, rb_db, mm_db)


@pytest.mark.parametrize("observer", ["minmax", "moving-average", "percentile", "histogram"])
def test_every_observer_runs_static(observer):
    model, samples = make("mlp")
    result = quantize(model, QuantConfig(mode="static", observer=observer), calibration=samples * 2)
    # Percentile and moving average trade a little range for robustness: 25 dB here, min/max 30+.
    assert result.report.output_sqnr_db >= 25.0
    assert result.report.calibration_method == observer


def test_static_progress_and_cancel_within_one_sample():
    model, samples = make("mlp")
    samples = samples * 2
    calls = []
    result = quantize(
        model, QuantConfig(mode="static"), calibration=samples, progress=lambda d, t, m: calls.append((d, t, m))
    )
    total = 16 + 3 + 4 + 1
    assert sorted({t for _, t, _ in calls}) == [total]
    done = [d for d, _, _ in calls]
    assert done == sorted(done) and done[-1] == total
    assert sum("calibrating" in m for _, _, m in calls) == 16

    token, forwards = CancelToken(), []
    hook = model.net[0].register_forward_pre_hook(lambda m, a: forwards.append(1))
    try:

        def progress(d, t, m):
            if d == 3:
                token.cancel()

        with pytest.raises(Cancelled):
            quantize(model, QuantConfig(mode="static"), calibration=samples, progress=progress, cancel=token)
    finally:
        hook.remove()
    # The clone keeps the user's hooks, so this counts calibration forwards: exactly 3 ran.
    assert len(forwards) == 3
    assert all(not m._forward_pre_hooks for m in model.modules())  # ours gone, none left behind
    assert result.report.passed


@pytest.fixture(scope="module")
def digits_classifier():
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    x, y = load_digits(return_X_y=True)
    x = torch.tensor(x, dtype=torch.float32) / 16.0
    y = torch.tensor(y)
    xtr, xte, ytr, yte = train_test_split(x, y, test_size=0.3, random_state=0)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 64), nn.ReLU(), nn.Linear(64, 10))
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(60):
        for i in range(0, len(xtr), 64):
            opt.zero_grad()
            nn.functional.cross_entropy(model(xtr[i : i + 64]), ytr[i : i + 64]).backward()
            opt.step()
    return model.eval(), xtr, xte, yte


def accuracy(model, x, y) -> float:
    with torch.inference_mode():
        return (model(x).argmax(1) == y).float().mean().item() * 100


def test_digits_accuracy_under_static_int8(digits_classifier):
    model, xtr, xte, yte = digits_classifier
    float_acc = accuracy(model, xte, yte)
    assert float_acc > 94.0
    calib = [xtr[i : i + 32] for i in range(0, 256, 32)]  # 8 batches = 256 samples
    result = quantize(model, QuantConfig(mode="static", observer="histogram"), calibration=calib)
    q_acc = accuracy(result.model, xte, yte)
    assert q_acc >= float_acc - 1.0, (float_acc, q_acc)
