"""The ``.safetensors`` layout, written and read directly.

Writing it here (rather than through ``safetensors.torch.save_file``) lets the
bytes go straight from each tensor's memory into our atomic temporary file, and
makes the file size computable exactly before writing.  The layout is byte for
byte what ``safetensors.torch.save`` produces for the same tensors and
metadata (a test checks it): an 8-byte little-endian header length, a compact
JSON header padded with spaces to a multiple of 8, then the tensor bytes
ordered by dtype (widest first) and name, so every tensor is aligned.
"""

from __future__ import annotations

import ctypes
import json
import os
import struct
import sys
from typing import BinaryIO

import torch

from ..errors import QuantizedFileError

#: The safetensors library refuses headers larger than this.
HEADER_LIMIT = 100_000_000

# safetensors' Dtype enum order; files list tensors by this order, descending.
_DTYPE_ORDER = [
    ("BOOL", "bool"),
    ("U8", "uint8"),
    ("I8", "int8"),
    ("F8_E5M2", "float8_e5m2"),
    ("F8_E4M3", "float8_e4m3fn"),
    ("I16", "int16"),
    ("U16", "uint16"),
    ("F16", "float16"),
    ("BF16", "bfloat16"),
    ("I32", "int32"),
    ("U32", "uint32"),
    ("F32", "float32"),
    ("C64", "complex64"),
    ("F64", "float64"),
    ("I64", "int64"),
    ("U64", "uint64"),
]
_RANK: dict[torch.dtype, int] = {}
_CODE: dict[torch.dtype, str] = {}
TORCH_DTYPES: dict[str, torch.dtype] = {}
for _rank, (_code, _attr) in enumerate(_DTYPE_ORDER):
    _dtype = getattr(torch, _attr, None)
    if _dtype is not None:
        _RANK[_dtype], _CODE[_dtype], TORCH_DTYPES[_code] = _rank, _code, _dtype


def _nbytes(t: torch.Tensor) -> int:
    return t.numel() * t.element_size()


def dtype_code(name: str, t: torch.Tensor) -> str:
    """The safetensors name of ``t``'s dtype (``I8``, ``F32``, ...)."""
    code = _CODE.get(t.dtype)
    if code is None:
        raise QuantizedFileError(f"{name}: dtype {t.dtype} cannot be stored in a .safetensors file")
    return code


def layout(tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> tuple[bytes, list[torch.Tensor], int]:
    """(length prefix + padded header, tensors in file order, total file size)."""
    order = sorted(tensors.items(), key=lambda kv: (-_RANK.get(kv[1].dtype, -1), kv[0]))
    header: dict = {"__metadata__": metadata} if metadata else {}
    offset = 0
    for name, t in order:
        end = offset + _nbytes(t)
        header[name] = {"dtype": dtype_code(name, t), "shape": list(t.shape), "data_offsets": [offset, end]}
        offset = end
    text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    text += b" " * (-len(text) % 8)
    if len(text) > HEADER_LIMIT:
        raise QuantizedFileError(
            f"the safetensors header would be {len(text)} bytes, over the {HEADER_LIMIT}-byte limit"
        )
    return struct.pack("<Q", len(text)) + text, [t for _, t in order], 8 + len(text) + offset


def _byte_view(t: torch.Tensor) -> memoryview:
    """The tensor's bytes without a copy (``t`` must stay alive while the view is used)."""
    # ctypes rather than numpy: numpy is not a dependency of the engine.
    return memoryview((ctypes.c_ubyte * _nbytes(t)).from_address(t.data_ptr())).cast("B")


def write(f: BinaryIO, header: bytes, ordered: list[torch.Tensor]) -> None:
    """Write a layout made by :func:`layout` (tensors: contiguous, on the CPU)."""
    if sys.byteorder != "little":
        raise QuantizedFileError("writing .safetensors files needs a little-endian machine")
    f.write(header)
    write_data(f, ordered)


def write_data(f: BinaryIO, ordered: list[torch.Tensor]) -> None:
    """The data section: each tensor's bytes in file order, at the file's current position."""
    if sys.byteorder != "little":
        raise QuantizedFileError("writing .safetensors files needs a little-endian machine")
    for t in ordered:
        if t.numel():
            f.write(_byte_view(t))


def read_header(path: str) -> dict:
    """The parsed JSON header of a safetensors file, checked against the file size."""
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as f:
            prefix = f.read(8)
            if len(prefix) < 8:
                raise QuantizedFileError(
                    f"{path}: the file is empty"
                    if size == 0
                    else f"{path}: truncated or not a mono-quant file ({size} bytes)"
                )
            n = struct.unpack("<Q", prefix)[0]
            if n > HEADER_LIMIT or 8 + n > size:
                raise QuantizedFileError(
                    f"{path}: corrupt or truncated: the header claims {n} bytes but the file has {size}"
                )
            raw = f.read(n)
    except OSError as exc:
        raise QuantizedFileError(f"{path}: cannot read the file: {exc.strerror or exc}") from exc
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise QuantizedFileError(f"{path}: corrupt: the safetensors header is not valid JSON ({exc})") from exc
    if not isinstance(header, dict):
        raise QuantizedFileError(f"{path}: corrupt: the safetensors header is not a JSON object")
    end = check_entries(header, path)
    if 8 + n + end != size:
        raise QuantizedFileError(
            f"{path}: truncated or corrupt: the header describes {8 + n + end} bytes, the file has {size}"
        )
    return header


def _entry_error(path: str, name: str, field: str, problem: str) -> QuantizedFileError:
    return QuantizedFileError(f"{path}: corrupt: the safetensors header entry of tensor {name!r}: {field!r} {problem}")


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_metadata_entry(value: object, path: str) -> None:
    if not isinstance(value, dict):
        raise QuantizedFileError(f"{path}: corrupt: the safetensors header field '__metadata__' is not an object")
    for key, text in value.items():
        if not isinstance(text, str):
            raise QuantizedFileError(
                f"{path}: corrupt: the safetensors header field '__metadata__.{key}' is not a string"
            )


def _check_entry(name: str, info: object, path: str) -> tuple[int, int]:
    """``(begin, end)`` of one tensor entry, after checking its ``dtype``, ``shape`` and ``data_offsets``."""
    if not isinstance(info, dict):
        raise QuantizedFileError(f"{path}: corrupt: the safetensors header entry of tensor {name!r} is not an object")
    for field in ("dtype", "shape", "data_offsets"):
        if field not in info:
            raise _entry_error(path, name, field, "is missing")
    dtype = info["dtype"]
    if not isinstance(dtype, str) or dtype not in TORCH_DTYPES:
        raise _entry_error(path, name, "dtype", f"is {dtype!r}, not a dtype code this mono-quant reads")
    shape = info["shape"]
    if not isinstance(shape, list) or not all(_is_int(d) and d >= 0 for d in shape):
        raise _entry_error(path, name, "shape", f"is {shape!r}, not a list of non-negative integers")
    offsets = info["data_offsets"]
    if not (isinstance(offsets, list) and len(offsets) == 2 and all(_is_int(o) for o in offsets)):
        raise _entry_error(path, name, "data_offsets", f"is {offsets!r}, not a pair of integers")
    begin, end = offsets
    count = 1
    for d in shape:
        count *= d
    expected = count * TORCH_DTYPES[dtype].itemsize
    if begin < 0 or end - begin != expected:
        raise _entry_error(
            path, name, "data_offsets", f"span {end - begin} bytes, but {dtype} {shape} needs {expected}"
        )
    return begin, end


def check_entries(header: dict, path: str) -> int:
    """Check every entry of a parsed header; returns the length of the data section.

    The tensors must tile the data section exactly (no gap, no overlap), as the
    safetensors library requires.
    """
    spans = []
    for name, info in header.items():
        if name == "__metadata__":
            _check_metadata_entry(info, path)
            continue
        spans.append((*_check_entry(name, info, path), name))
    spans.sort()
    end = 0
    for begin, stop, name in spans:
        if begin != end:
            raise _entry_error(path, name, "data_offsets", f"start at byte {begin} of the data section, expected {end}")
        end = stop
    return end
