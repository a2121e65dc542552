"""Quantized replacements of Linear, Conv1d/2d/3d, ConvTranspose1d/2d, Embedding, LSTM, GRU and
MultiheadAttention (docs/architecture.md)."""

from __future__ import annotations

from .attention import (
    QuantizedMultiheadAttention,
    QuantizedNonDynamicallyQuantizableLinear,
    disable_fused_fast_paths,
)
from .base import QuantizedModule
from .conv import (
    QuantizedConv1d,
    QuantizedConv2d,
    QuantizedConv3d,
    QuantizedConvNd,
    QuantizedConvTranspose1d,
    QuantizedConvTranspose2d,
    QuantizedConvTransposeNd,
)
from .embedding import QuantizedEmbedding
from .linear import QuantizedLinear
from .registry import REPLACEMENTS, replacement_for
from .rnn import QuantizedGRU, QuantizedLSTM, QuantizedRNNBase

__all__ = [
    "REPLACEMENTS",
    "QuantizedConv1d",
    "QuantizedConv2d",
    "QuantizedConv3d",
    "QuantizedConvNd",
    "QuantizedConvTranspose1d",
    "QuantizedConvTranspose2d",
    "QuantizedConvTransposeNd",
    "QuantizedEmbedding",
    "QuantizedGRU",
    "QuantizedLSTM",
    "QuantizedLinear",
    "QuantizedModule",
    "QuantizedMultiheadAttention",
    "QuantizedNonDynamicallyQuantizableLinear",
    "QuantizedRNNBase",
    "disable_fused_fast_paths",
    "replacement_for",
]
