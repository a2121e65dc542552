"""Dynamic-mode convolution: each sample's input on its own int8 grid (modules/conv.py).

One grid per batch let the loudest sample set the step for all: on a CNN fed inputs of varied
level (audio frames, images at different exposure) the quiet samples kept a few codes and
dynamic mode lost the float model's class where static and weight-only kept it.  Per-sample
grids make a sample's output independent of the rest of its batch.  The measured numbers on
the real pitch-tracking CNN (CREPE) are in docs/benchmarks.md (bench/bench_dynamic_conv.py).
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from mono_quant_core import QuantConfig, quantize
from mono_quant_core.modules.conv import QuantizedConv1d, QuantizedConv2d, per_sample_fake_quantize
from mono_quant_core.tensor import activation_qparams, fake_quantize, sqnr_db

#: Dynamic mode keeps the float model's class at least as often as static and weight-only, to within this.
AGREEMENT_SLACK = 0.01
#: A quiet sample batched with a 1000× louder one: its output as when run alone, within this
#: (max |diff| / max |output|: float convolutions of different batch sizes round differently).
ALONE_REL_TOL = 1e-5
#: ... and int8-accurate against the float model.
QUIET_MIN_SQNR_DB = 30.0


def _trained_cnn() -> tuple[nn.Module, torch.Tensor]:
    """A Conv→BN→ReLU CNN trained for a few seconds on scikit-learn's digits (seed fixed), and
    its held-out images."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    torch.manual_seed(0)
    order = torch.randperm(len(digits.target))
    x = (torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0)[order]
    x = nn.functional.interpolate(x, size=16, mode="bilinear", align_corners=False)
    y = torch.tensor(digits.target)[order]
    model = nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1),
        nn.BatchNorm2d(16),
        nn.ReLU(),
        nn.Conv2d(16, 32, 3, padding=1, stride=2),
        nn.BatchNorm2d(32),
        nn.ReLU(),
        nn.Conv2d(32, 32, 3, padding=1, stride=2),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(32, 10),
    )
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(6):
        for i in range(0, 1400, 100):
            opt.zero_grad()
            nn.functional.cross_entropy(model(x[i : i + 100]), y[i : i + 100]).backward()
            opt.step()
    return model.eval(), x[1400:]


def _varied_levels(x: torch.Tensor, seed: int) -> torch.Tensor:
    """Each image at its own level, 1/100 to 1 (log-uniform), as audio frames of a recording are."""
    g = torch.Generator().manual_seed(seed)
    return x * 10 ** (-2 * torch.rand(x.shape[0], 1, 1, 1, generator=g))


@pytest.fixture(scope="module")
def cnn() -> tuple[nn.Module, list[torch.Tensor]]:
    model, held_out = _trained_cnn()
    images = _varied_levels(held_out, seed=1)
    return model, [images[i : i + 64] for i in range(0, len(images) - 63, 64)]


def _classes(model: nn.Module, batches: list[torch.Tensor]) -> torch.Tensor:
    with torch.inference_mode():
        return torch.cat([model(b).argmax(-1) for b in batches])


def test_dynamic_keeps_the_float_class_as_often_as_static(cnn: tuple[nn.Module, list[torch.Tensor]]) -> None:
    model, batches = cnn
    reference = _classes(model, batches)
    agreement = {}
    for mode in ("weight-only", "static", "dynamic"):
        result = quantize(model, QuantConfig(mode=mode), batches, validate=False)
        agreement[mode] = float((_classes(result.model, batches) == reference).float().mean())
    print(f"top-1 agreement with float on {len(reference)} images: {agreement}")
    assert agreement["dynamic"] >= agreement["static"] - AGREEMENT_SLACK
    assert agreement["dynamic"] >= agreement["weight-only"] - AGREEMENT_SLACK


def test_a_loud_sample_leaves_the_others_as_when_run_alone(cnn: tuple[nn.Module, list[torch.Tensor]]) -> None:
    model, batches = cnn
    quiet = batches[0][:7] * 0.01
    loud = batches[0][7:8] * 10.0
    # The convolutions only: dynamic Linear kernels (fbgemm) take one grid per call, as documented.
    config = QuantConfig(mode="dynamic", exclude_types=["Linear"])
    qmodel = quantize(model, config, batches, validate=False).model
    with torch.inference_mode():
        together = qmodel(torch.cat([quiet, loud]))[:7]
        alone = torch.cat([qmodel(quiet[i : i + 1]) for i in range(7)])
        float_out = model(quiet)
    assert float((together - alone).abs().max() / alone.abs().max()) <= ALONE_REL_TOL
    db = float(sqnr_db(float_out, together))
    print(f"quiet samples next to a loud one: {db:.1f} dB")
    assert db >= QUIET_MIN_SQNR_DB


def test_one_sample_is_the_per_tensor_grid_exactly() -> None:
    x = torch.randn(1, 4, 9, 9, generator=torch.Generator().manual_seed(2)) * 3 + 1
    assert torch.equal(per_sample_fake_quantize(x), fake_quantize(x, *activation_qparams(x)))
    batch = torch.cat([x, x * 50])
    rows = per_sample_fake_quantize(batch)
    assert torch.equal(rows[0:1], per_sample_fake_quantize(x))
    assert torch.equal(rows[1:2], per_sample_fake_quantize(x * 50))


def test_unbatched_and_half_inputs() -> None:
    conv = nn.Conv1d(3, 5, 3)
    q = QuantizedConv1d.from_float(conv, QuantConfig(mode="dynamic"))
    x = torch.randn(3, 20, generator=torch.Generator().manual_seed(3))
    with torch.inference_mode():
        assert torch.equal(q(x), q(x.unsqueeze(0))[0])  # unbatched: one sample, one grid
    conv2 = nn.Conv2d(2, 4, 3).half()
    q2 = QuantizedConv2d.from_float(conv2, QuantConfig(mode="dynamic"))
    xh = torch.randn(2, 2, 8, 8, generator=torch.Generator().manual_seed(4)).half()
    assert per_sample_fake_quantize(xh).dtype == torch.float16
    assert q2.quantize_input(xh).dtype == torch.float16


def test_the_onnx_export_rounds_each_sample_as_the_model_does(tmp_path) -> None:
    """An exported dynamic convolution computes what the quantized layer does with a loud and a
    quiet sample in one batch (one DynamicQuantizeLinear grid would drown the quiet one)."""
    import onnxruntime as ort

    from mono_quant_core.export.onnx_qdq import export_onnx

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 4, 3)).eval()
    g = torch.Generator().manual_seed(1)
    calibration = [torch.randn(2, 3, 12, 12, generator=g) for _ in range(4)]
    result = quantize(model, QuantConfig(mode="dynamic"), calibration=calibration, validate=False)
    x = torch.cat([torch.randn(1, 3, 12, 12, generator=g) * 50, torch.randn(1, 3, 12, 12, generator=g) * 0.1])
    path = tmp_path / "dynamic.onnx"
    export_onnx(result, calibration[0], path)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (onnx_out,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    with torch.inference_mode():
        ours = result.model(x)
    quiet = torch.from_numpy(onnx_out)[1]
    assert sqnr_db(ours[1], quiet) >= 60.0  # the same rounding, float arithmetic apart
    assert sqnr_db(ours[0], torch.from_numpy(onnx_out)[0]) >= 60.0
