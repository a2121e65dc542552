"""Quantized files: ``.safetensors`` and ``.pt`` writing, loading, metadata, dequantization.

The layout is documented in docs/file-format.md.
"""

from __future__ import annotations

from .compressed_tensors import compressed_tensors_problems
from .dequantize import dequantize
from .load import load_quantized
from .metadata import FORMAT_VERSION
from .open_result import open_quantized
from .read import read_metadata
from .save import estimate_file_bytes, save_quantized

__all__ = [
    "FORMAT_VERSION",
    "compressed_tensors_problems",
    "dequantize",
    "estimate_file_bytes",
    "load_quantized",
    "open_quantized",
    "read_metadata",
    "save_quantized",
]
