"""Quantized replacements of Linear, Conv1d/2d/3d, Embedding, LSTM and GRU (docs/architecture.md)."""

from __future__ import annotations

from .base import QuantizedModule
from .conv import QuantizedConv1d, QuantizedConv2d, QuantizedConv3d, QuantizedConvNd
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
    "QuantizedEmbedding",
    "QuantizedGRU",
    "QuantizedLSTM",
    "QuantizedLinear",
    "QuantizedModule",
    "QuantizedRNNBase",
    "replacement_for",
]
