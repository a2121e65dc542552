"""Pure tensor functions: qparams, quantize / dequantize, int4 pack / unpack, SQNR (docs/quantization-math.md)."""

from __future__ import annotations

from .activations import ACT_QMAX, ACT_QMIN, activation_qparams, fake_quantize
from .affine import dequantize, quantize
from .casts import CAST_DTYPES, cast_dtype
from .int4 import pack_int4, unpack_int4
from .layout import qparam_shape
from .qparams import SCALE_EPS, choose_qparams, min_max, qparams_from_range
from .spec import INT4_SYMMETRIC_OFFSET, QuantSpec, qrange
from .sqnr import db_from_sums, sqnr_db, sqnr_sums
from .storage import (
    QuantizedTensor,
    code_range,
    decode,
    dequantize_weight,
    dequantize_weight_into,
    encode,
    quantize_weight,
    quantize_weight_measured,
    stored_dtype,
    stored_shape,
)

__all__ = [
    "ACT_QMAX",
    "ACT_QMIN",
    "CAST_DTYPES",
    "INT4_SYMMETRIC_OFFSET",
    "SCALE_EPS",
    "QuantSpec",
    "QuantizedTensor",
    "activation_qparams",
    "cast_dtype",
    "choose_qparams",
    "code_range",
    "db_from_sums",
    "decode",
    "dequantize",
    "dequantize_weight",
    "dequantize_weight_into",
    "encode",
    "fake_quantize",
    "min_max",
    "pack_int4",
    "qparam_shape",
    "qparams_from_range",
    "qrange",
    "quantize",
    "quantize_weight",
    "quantize_weight_measured",
    "sqnr_db",
    "sqnr_sums",
    "stored_dtype",
    "stored_shape",
    "unpack_int4",
]
