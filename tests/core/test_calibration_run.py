"""The calibration run: hooks, progress, cancel, odd inputs and outputs, determinism."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import ClassVar

import pytest
import torch
from test_observers import config_for
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence
from transformers.utils import ModelOutput
from zoo import assert_unchanged, make, snapshot

from mono_quant_core import CalibrationError, Cancelled, CancelToken, QuantConfig
from mono_quant_core.calibration import affine_qparams, calibrate, make_observer

MINMAX = QuantConfig(mode="static", observer="minmax")


def no_hooks(model: nn.Module) -> bool:
    return all(
        not m._forward_pre_hooks and not m._forward_pre_hooks_with_kwargs and not m._forward_hooks
        for m in model.modules()
    )


class Counting(nn.Module):
    """Counts forward calls; raises on the call numbered ``fail_at``."""

    def __init__(self, fail_at: int | None = None):
        super().__init__()
        torch.manual_seed(0)
        self.lin = nn.Linear(6, 4)
        self.calls, self.fail_at = 0, fail_at

    def forward(self, x):
        self.calls += 1
        if self.calls == self.fail_at:
            raise RuntimeError("shape mismatch in block 3")
        return self.lin(x)


def batches(n: int, shape=(5, 6), seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(*shape, generator=g) for _ in range(n)]


def test_qparams_equal_observers_fed_the_layer_inputs_by_hand():
    model, samples = make("mlp")
    names = ["net.0", "net.2", "net.4"]
    for kind in ("minmax", "histogram", "percentile"):
        config = QuantConfig(mode="static", observer=kind)
        result = calibrate(model, names, samples, config)
        observers = {n: make_observer(config) for n in names}
        with torch.no_grad():
            for x in samples:
                h1 = torch.relu(model.net[0](x))
                h2 = torch.relu(model.net[2](h1))
                for name, value in zip(names, (x, h1, h2), strict=True):
                    observers[name].update(value)
        assert list(result) == names and result.unobserved == [] and result.samples == len(samples)
        for name in names:
            scale, zp = result[name]
            want_scale, want_zp = observers[name].qparams()
            assert torch.equal(scale, want_scale) and torch.equal(zp, want_zp), (kind, name)
            assert scale.shape == () and scale.dtype == torch.float32 and zp.dtype == torch.int32
            assert not scale.is_inference() and not zp.is_inference()
            assert torch.equal(torch.stack(result.ranges[name]), torch.stack(observers[name].min_max()))
    assert no_hooks(model)


def test_progress_counts_are_exact_and_span_maps_them_into_a_run():
    from mono_quant_core.progress import span

    model = Counting()
    calls = []
    whole = span(lambda d, t, m: calls.append((d, t, m)), start=5, length=4, total=20)
    calibrate(model, ["lin"], batches(4), MINMAX, whole)
    assert calls == [(5 + i, 20, f"calibrating {i}/4") for i in range(1, 5)]
    calls.clear()
    calibrate(model, ["lin"], batches(3), MINMAX, lambda d, t, m: calls.append((d, t, m)))
    assert calls == [(1, 3, "calibrating 1/3"), (2, 3, "calibrating 2/3"), (3, 3, "calibrating 3/3")]


def test_samples_without_a_length_run_lazily():
    model = Counting()
    calls = []
    result = calibrate(model, ["lin"], iter(batches(3)), MINMAX, lambda d, t, m: calls.append((d, t, m)))
    assert calls == [(1, 1, "calibrating 1/?"), (2, 2, "calibrating 2/?"), (3, 3, "calibrating 3/?")]
    assert result.samples == 3 and model.calls == 3


def test_a_bare_tensor_or_dict_is_one_batch():
    model = Counting()
    x = batches(1)[0]
    for samples in (x, {"x": x}):
        result = calibrate(model, ["lin"], samples, MINMAX)
        assert result.samples == 1
        assert torch.equal(torch.stack(result.ranges["lin"]), torch.stack(torch.aminmax(x)))
    assert model.calls == 2


class Folder(list):
    """A list of batches with file names, like a CalibrationSet."""

    files: ClassVar[list[str]] = [f"x{i}.pt" for i in range(1, 4)]


def test_a_model_error_names_the_file():
    with pytest.raises(CalibrationError, match=r"calibration sample 3 \(x3.pt\): the model raised"):
        calibrate(Counting(fail_at=3), ["lin"], Folder(batches(3)), MINMAX)


@pytest.mark.parametrize("token_kind", ["CancelToken", "Event"])
def test_cancel_in_progress_after_sample_3_stops_before_sample_4(token_kind):
    model = Counting()
    token = CancelToken() if token_kind == "CancelToken" else threading.Event()
    cancel_at = 3 if token_kind == "CancelToken" else 1

    def progress(done, total, message):
        if done == cancel_at:
            token.set() if token_kind == "Event" else token.cancel()

    with pytest.raises(Cancelled):
        calibrate(model, ["lin"], batches(10), MINMAX, progress, token)
    # The token is checked before each sample: the sample after the request never runs.
    assert model.calls == cancel_at
    assert no_hooks(model)


def test_cancel_before_the_first_sample_runs_nothing():
    model, token = Counting(), CancelToken()
    token.cancel()
    with pytest.raises(Cancelled):
        calibrate(model, ["lin"], batches(3), MINMAX, None, token)
    assert model.calls == 0 and no_hooks(model)


def test_a_model_error_names_the_sample_and_leaves_no_hooks():
    model = Counting(fail_at=2)
    model.train()
    message = r"calibration sample 2: the model raised RuntimeError: shape mismatch"
    with pytest.raises(CalibrationError, match=message) as info:
        calibrate(model, ["lin"], batches(4), MINMAX)
    assert isinstance(info.value.__cause__, RuntimeError)
    assert no_hooks(model) and model.training and model.lin.training


def test_unknown_layer_is_an_error_naming_it():
    model = Counting()
    with pytest.raises(CalibrationError, match=r"layer_names: the model has no module named 'head'"):
        calibrate(model, ["lin", "head"], batches(2), MINMAX)
    assert model.calls == 0 and no_hooks(model)


@pytest.mark.parametrize("kind", ["minmax", "moving-average", "percentile", "histogram", "entropy"])
@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_nan_or_inf_activations_are_an_error_naming_the_layer(kind, bad):
    model = Counting()
    samples = batches(3)
    samples[1][0, 0] = bad
    config = config_for(kind)
    with pytest.raises(CalibrationError, match=r"^lin: its calibration inputs contain NaN or Inf"):
        calibrate(model, ["lin"], samples, config)
    assert no_hooks(model)


@pytest.mark.parametrize("kind", ["minmax", "moving-average", "percentile", "histogram"])
def test_same_samples_give_identical_qparams(kind):
    model, samples = make("transformer")
    names = ["blocks.0.qkv", "blocks.1.mlp.2", "head"]
    config = QuantConfig(mode="static", observer=kind)
    first, second = calibrate(model, names, samples, config), calibrate(model, names, samples, config)
    assert list(first) == names
    for name in names:
        assert torch.equal(first[name][0], second[name][0]) and torch.equal(first[name][1], second[name][1])


def test_eval_mode_during_the_run_and_the_model_is_left_as_it_was():
    model, samples = make("cnn")
    model.train()  # BatchNorm would update its running statistics in training mode
    before = snapshot(model)
    result = calibrate(model, ["features.0", "features.3", "head"], samples, MINMAX)
    assert_unchanged(model, before)
    assert all(m.training for m in model.modules())
    reference = calibrate(model.eval(), ["features.0", "features.3", "head"], samples, MINMAX)
    for name in result:
        assert torch.equal(result[name][0], reference[name][0])


@dataclass
class Output(ModelOutput):
    logits: torch.Tensor | None = None
    hidden: tuple | None = None


class Outputs(nn.Module):
    """The same two layers, returning a tensor, a tuple, a dict or a ModelOutput."""

    def __init__(self, kind: str):
        super().__init__()
        torch.manual_seed(1)
        self.a, self.b, self.kind = nn.Linear(6, 8), nn.Linear(8, 3), kind

    def forward(self, x):
        h = self.a(x)
        y = self.b(input=torch.relu(h))  # called with a keyword input
        if self.kind == "tuple":
            return y, (h, None), 7
        if self.kind == "dict":
            return {"logits": y, "extra": [h, "text"]}
        if self.kind == "model-output":
            return Output(logits=y, hidden=(h,))
        return y


def test_outputs_of_any_type_calibrate_alike():
    samples = batches(4)
    results = {
        kind: calibrate(Outputs(kind), ["a", "b"], samples, MINMAX)
        for kind in ("tensor", "tuple", "dict", "model-output")
    }
    ref = results["tensor"]
    assert set(ref) == {"a", "b"}
    for kind, result in results.items():
        for name in ("a", "b"):
            assert all(torch.equal(got, want) for got, want in zip(result[name], ref[name], strict=True)), kind


class TwoInputs(nn.Module):
    def __init__(self):
        super().__init__()
        self.left, self.right, self.unused = nn.Linear(4, 2), nn.Linear(3, 2), nn.Linear(2, 2)

    def forward(self, x, y=None, scale=1.0):
        return self.left(x) * scale + self.right(y)


def test_tuple_and_dict_batches_and_unreached_layers():
    g = torch.Generator().manual_seed(2)
    xs = [torch.randn(2, 4, generator=g) for _ in range(3)]
    ys = [torch.randn(2, 3, generator=g) * 5 for _ in range(3)]
    model = TwoInputs()
    names = ["left", "right", "unused"]
    as_tuples = calibrate(model, names, list(zip(xs, ys, strict=True)), MINMAX)
    as_dicts = calibrate(model, names, [{"x": x, "y": y, "scale": 2.0} for x, y in zip(xs, ys, strict=True)], MINMAX)
    for result in (as_tuples, as_dicts):
        assert set(result) == {"left", "right"} and result.unobserved == ["unused"]
        assert torch.equal(torch.stack(result.ranges["left"]), torch.stack(torch.aminmax(torch.cat(xs))))
        assert torch.equal(torch.stack(result.ranges["right"]), torch.stack(torch.aminmax(torch.cat(ys))))


class Recurrent(nn.Module):
    def __init__(self, packed: bool):
        super().__init__()
        torch.manual_seed(3)
        self.lstm, self.gru = nn.LSTM(5, 7, batch_first=True), nn.GRU(7, 4, batch_first=True)
        self.packed = packed

    def forward(self, x, lengths):
        if self.packed:
            out, _ = self.lstm(pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False))
            out, _ = self.gru(out)
            return out.data
        h0 = torch.zeros(1, x.shape[0], 7)
        out, (_h, _c) = self.lstm(x, (h0, h0.clone()))  # the hx tuple is not observed
        return self.gru(out)


def test_lstm_and_gru_inputs_packed_or_not():
    g = torch.Generator().manual_seed(4)
    x = torch.randn(3, 6, 5, generator=g)
    lengths = torch.tensor([6, 2, 4])
    padded = x.clone()
    for i, n in enumerate(lengths):
        padded[i, n:] = 100.0  # padding: must not be observed when packed
    packed = calibrate(Recurrent(packed=True), ["lstm", "gru"], [(padded, lengths)], MINMAX)
    real = torch.cat([x[i, :n] for i, n in enumerate(lengths)])
    assert torch.equal(torch.stack(packed.ranges["lstm"]), torch.stack(torch.aminmax(real)))
    assert float(packed.ranges["gru"][1]) < 1.0  # LSTM outputs lie in (-1, 1)

    plain = calibrate(Recurrent(packed=False), ["lstm", "gru"], [(x, lengths)], MINMAX)
    assert torch.equal(torch.stack(plain.ranges["lstm"]), torch.stack(torch.aminmax(x)))
    assert set(plain) == {"lstm", "gru"}


def test_embedding_inputs_are_not_observed():
    model, samples = make("lstm")
    result = calibrate(model, ["embed", "rnn", "out"], samples, config_for("histogram"))
    assert list(result) == ["rnn", "out"] and result.unobserved == ["embed"]
    assert no_hooks(model)


def test_qparams_are_the_affine_rule_over_the_ranges():
    model, samples = make("mlp")
    result = calibrate(model, ["net.0", "net.2"], samples, QuantConfig(mode="static", observer="percentile"))
    for name, (scale, zp) in result.items():
        want = affine_qparams(*result.ranges[name], -128, 127)
        assert torch.equal(scale, want[0]) and torch.equal(zp, want[1])
    # Ordinary tensors: a caller may update them in place outside inference mode.
    result["net.0"][0].mul_(1.0)
