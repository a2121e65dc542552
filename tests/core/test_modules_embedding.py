"""QuantizedEmbedding: row gathers of int8 / packed int4 / cast tables, options kept."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from mono_quant_core.config import QuantConfig
from mono_quant_core.errors import ConfigError
from mono_quant_core.modules import QuantizedEmbedding
from mono_quant_core.tensor import sqnr_db


def table(**kwargs):
    torch.manual_seed(0)
    return nn.Embedding(300, 37, **kwargs).eval()


def tokens():
    return torch.randint(0, 300, (4, 11), generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize(
    "config,floor",
    [
        (dict(mode="dynamic"), 40.0),
        (dict(mode="weight-only", scheme="asymmetric", granularity="per-tensor"), 35.0),
        (dict(mode="weight-only", granularity="per-group", group_size=16), 40.0),
        (dict(dtype="int4", mode="weight-only", granularity="per-group", group_size=16), 17.0),
        (dict(dtype="int4", mode="weight-only", scheme="asymmetric"), 17.0),
        (dict(dtype="fp16"), 60.0),
        (dict(dtype="bf16"), 45.0),
    ],
)
def test_lookups_equal_rows_of_the_dequantized_table(config, floor):
    emb, idx = table(), tokens()
    q = QuantizedEmbedding.from_float(emb, QuantConfig(**config))
    y = q(idx)
    assert y.shape == (4, 11, 37) and y.dtype == torch.float32
    assert torch.equal(y, q.dequantized_weight()[idx])
    assert sqnr_db(emb(idx).detach(), y) >= floor
    assert q.mode == "weight-only"  # no floating-point activation to quantize


def test_int4_rows_stay_packed():
    q = QuantizedEmbedding.from_float(table(), QuantConfig(dtype="int4", mode="weight-only"))
    assert q.weight.dtype == torch.uint8 and q.weight.shape == (300, 19)


def test_options_kept_and_max_norm_applied_out_of_place():
    emb = table(padding_idx=2, max_norm=0.5, norm_type=2.0)
    idx = tokens()
    q = QuantizedEmbedding.from_float(emb, QuantConfig(mode="weight-only"))
    stored = q.weight.clone()
    y = q(idx)
    assert torch.equal(q.weight, stored)
    norms = torch.linalg.vector_norm(y, dim=-1)
    assert float(norms.max()) <= 0.5 + 1e-5
    plain = q.to_float()
    assert plain.padding_idx == 2 and plain.max_norm == 0.5
    reference = emb(idx).detach()  # renormalises emb.weight in place: only after the snapshot
    assert sqnr_db(reference, y) >= 40.0


def test_output_dtype_follows_half_and_double():
    emb, idx = table(), tokens()
    q = QuantizedEmbedding.from_float(emb, QuantConfig(mode="weight-only"))
    assert q.half()(idx).dtype == torch.float16 and q.weight_scale.dtype == torch.float32
    assert q.double()(idx).dtype == torch.float64


def test_no_input_qparams():
    q = QuantizedEmbedding.from_float(table(), QuantConfig(mode="static"))
    assert "input_scale" not in q.state_dict()
    with pytest.raises(ConfigError, match="mode"):
        q.set_input_qparams(0.1, 0)
