"""QuantizedLSTM / QuantizedGRU: all layers and directions, projections, packed sequences."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

from mono_quant_core.config import QuantConfig
from mono_quant_core.modules import QuantizedGRU, QuantizedLSTM
from mono_quant_core.outputs import flat_tensors
from mono_quant_core.tensor import sqnr_db


def worst_sqnr(reference, approx) -> float:
    return min(sqnr_db(a, b) for a, b in zip(flat_tensors(reference), flat_tensors(approx), strict=True))


def test_every_weight_is_quantized_and_biases_stay_float():
    torch.manual_seed(0)
    lstm = nn.LSTM(12, 16, num_layers=2, bidirectional=True)
    q = QuantizedLSTM.from_float(lstm, QuantConfig(mode="weight-only"))
    state = q.state_dict()
    for name, p in lstm.named_parameters():
        if name.startswith("weight"):
            assert state[name].dtype == torch.int8 and state[f"{name}_scale"].shape == (p.shape[0],)
        else:
            assert state[name].dtype == torch.float32 and state[name].data_ptr() == p.data_ptr()
    assert len(q.weight_shapes) == 8 and q.quant_meta()["weights"]["weight_hh_l1_reverse"] == [64, 16]


@pytest.mark.parametrize(
    "cls,make",
    [
        (QuantizedLSTM, lambda: nn.LSTM(12, 16, num_layers=2, batch_first=True, bidirectional=True)),
        (QuantizedGRU, lambda: nn.GRU(12, 16, num_layers=3, batch_first=True, bidirectional=True)),
    ],
)
@pytest.mark.parametrize("mode,floor", [("dynamic", 35.0), ("weight-only", 40.0)])
def test_hx_and_packed_sequences(cls, make, mode, floor):
    torch.manual_seed(0)
    rnn = make().eval()
    g = torch.Generator().manual_seed(1)
    x = torch.randn(3, 9, 12, generator=g)
    h0 = torch.randn(rnn.num_layers * 2, 3, 16, generator=g)
    hx = (h0, torch.randn_like(h0)) if isinstance(rnn, nn.LSTM) else h0
    q = cls.from_float(rnn, QuantConfig(mode=mode))
    with torch.inference_mode():
        assert worst_sqnr(rnn(x, hx), q(x, hx)) >= floor
        packed = pack_padded_sequence(x, torch.tensor([9, 6, 2]), batch_first=True)
        assert worst_sqnr(rnn(packed), q(packed)) >= floor
        assert worst_sqnr(rnn(x[0]), q(x[0])) >= floor  # unbatched input


def test_lstm_projection_and_dtypes():
    torch.manual_seed(0)
    lstm = nn.LSTM(12, 16, proj_size=6).eval()
    x = torch.randn(5, 2, 12)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch: "LSTM with projections is not supported with oneDNN"
        reference = lstm(x)
        for config, floor in (
            (dict(mode="weight-only"), 40.0),
            (dict(dtype="int4", mode="weight-only", granularity="per-group", group_size=4), 17.0),
            (dict(dtype="fp16"), 60.0),
        ):
            q = QuantizedLSTM.from_float(lstm, QuantConfig(**config))
            assert "weight_hr_l0" in q.weight_shapes
            assert worst_sqnr(reference, q(x)) >= floor


def test_dynamic_mode_quantizes_the_input_sequence():
    torch.manual_seed(0)
    gru = nn.GRU(8, 8)
    x = torch.randn(4, 2, 8)
    dynamic = QuantizedGRU.from_float(gru, QuantConfig(mode="dynamic"))
    weight_only = QuantizedGRU.from_float(gru, QuantConfig(mode="weight-only"))
    assert torch.equal(dynamic(x)[0], weight_only(dynamic.quantize_input(x))[0])
    assert not torch.equal(dynamic(x)[0], weight_only(x)[0])
