"""The ``content_hash`` metadata field: SHA-256 of every stored tensor and of the metadata itself.

Written by ``save_quantized``, checked by ``load_quantized(verify=True)`` and
``mono-quant inspect --verify`` (docs/file-format.md, "Content hash").  Each
tensor's record holds its dtype, shape and the SHA-256 of its bytes (C order,
little-endian: the bytes of its safetensors data section), so a damaged byte,
a changed shape or dtype, or a renamed, missing or extra tensor is found.  The
metadata's own hash covers everything else that decides how the file loads
(layer records, aliases).
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import re
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import torch

from ..errors import ContentHashError, QuantizedFileError
from .safetensors_file import TORCH_DTYPES

#: Name of the metadata field.
FIELD = "content_hash"
ALGORITHM = "sha256"
_HEX = re.compile(r"[0-9a-f]{64}")
#: Placeholder digest: same length as a real one, for exact size estimates without hashing.
PLACEHOLDER = "0" * 64
#: Below this many bytes in all, hashing stays on the calling thread.
_PARALLEL_BYTES = 8 << 20
_CODES = {dtype: code for code, dtype in TORCH_DTYPES.items()}


def dtype_name(dtype: torch.dtype) -> str:
    """The safetensors code of ``dtype`` (``I8``, ``F32``, ...), else torch's name."""
    return _CODES.get(dtype, str(dtype))


def tensor_digest(t: torch.Tensor) -> str:
    """SHA-256 (hex) of ``t``'s elements as bytes in C order (no copy when ``t`` is contiguous on the CPU)."""
    t = t.detach()
    if t.device.type != "cpu":
        t = t.cpu()
    t = t.contiguous()
    n = t.numel() * t.element_size()
    if n == 0:
        return hashlib.sha256(b"").hexdigest()
    view = memoryview((ctypes.c_ubyte * n).from_address(t.data_ptr())).cast("B")
    return hashlib.sha256(view).hexdigest()  # hashlib releases the GIL for large buffers


def _digests(tensors: Iterable[torch.Tensor]) -> list[str]:
    items = list(tensors)
    total = sum(t.numel() * t.element_size() for t in items)
    workers = min(8, os.cpu_count() or 1)
    if total < _PARALLEL_BYTES or workers < 2 or len(items) < 2:
        return [tensor_digest(t) for t in items]
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="mono-quant-hash") as pool:
        return list(pool.map(tensor_digest, items))


def tensor_records(tensors: dict[str, torch.Tensor], hash_data: bool = True) -> dict[str, dict[str, Any]]:
    """``{name: {"dtype", "shape", "sha256"}}``; ``hash_data=False`` writes placeholder digests (same size)."""
    digests = _digests(tensors.values()) if hash_data else [PLACEHOLDER] * len(tensors)
    return {
        name: {"dtype": dtype_name(t.dtype), "shape": list(t.shape), "sha256": digest}
        for (name, t), digest in zip(tensors.items(), digests, strict=True)
    }


def metadata_digest(meta: dict[str, Any]) -> str:
    """SHA-256 of the metadata written compactly without the ``content_hash`` field."""
    from .metadata import dumps

    rest = {k: v for k, v in meta.items() if k != FIELD}
    return hashlib.sha256(dumps(rest).encode("ascii")).hexdigest()


def add_content_hash(meta: dict[str, Any], tensors: dict[str, torch.Tensor], hash_data: bool = True) -> None:
    """Add the ``content_hash`` field to ``meta`` (last, after every other field)."""
    meta.pop(FIELD, None)
    records = tensor_records(tensors, hash_data)
    meta[FIELD] = {
        "algorithm": ALGORITHM,
        "metadata": metadata_digest(meta) if hash_data else PLACEHOLDER,
        "tensors": records,
    }


def _bad(path: str, field: str, problem: str) -> QuantizedFileError:
    return QuantizedFileError(f"{path}: corrupt: metadata field '{field}' {problem}")


def check_field(value: object, path: str) -> None:
    """Refuse a malformed ``content_hash`` field (its absence is fine: an older file)."""
    if not isinstance(value, dict):
        raise _bad(path, FIELD, f"must be an object, not {type(value).__name__}")
    algorithm = value.get("algorithm")
    if algorithm != ALGORITHM:
        raise _bad(path, f"{FIELD}.algorithm", f"is {algorithm!r}; this mono-quant checks only {ALGORITHM!r}")
    if not isinstance(value.get("metadata"), str) or not _HEX.fullmatch(value["metadata"]):
        raise _bad(path, f"{FIELD}.metadata", "must be 64 lowercase hexadecimal digits")
    records = value.get("tensors")
    if not isinstance(records, dict):
        raise _bad(path, f"{FIELD}.tensors", "must map tensor names to records")
    for name, record in records.items():
        where = f'{FIELD}.tensors["{name}"]'
        if not isinstance(record, dict):
            raise _bad(path, where, "must be an object with dtype, shape and sha256")
        if not isinstance(record.get("dtype"), str):
            raise _bad(path, f"{where}.dtype", "must be a string")
        shape = record.get("shape")
        if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) for d in shape):
            raise _bad(path, f"{where}.shape", "must be a list of integers")
        digest = record.get("sha256")
        if not isinstance(digest, str) or not _HEX.fullmatch(digest):
            raise _bad(path, f"{where}.sha256", "must be 64 lowercase hexadecimal digits")


def verify_metadata(meta: dict[str, Any], path: str) -> None:
    """Raise ``ContentHashError`` when the metadata differs from what was hashed at saving."""
    recorded = meta[FIELD]["metadata"]
    if metadata_digest(meta) != recorded:
        raise ContentHashError(
            f"{path}: corrupt: the metadata differs from its SHA-256 recorded when the file was written "
            "(layer records, aliases or other fields were changed)",
            path=path,
            tensor=None,
        )


def verify_tensors(meta: dict[str, Any], tensors: dict[str, torch.Tensor], path: str) -> int:
    """Check every tensor against its record, in the file's order; returns how many were checked."""
    records: dict[str, dict[str, Any]] = meta[FIELD]["tensors"]
    extra = [name for name in tensors if name not in records]
    if extra:
        raise ContentHashError(
            f"{path}: corrupt: tensor {extra[0]!r} has no recorded hash (the file's tensor names were changed)",
            path=path,
            tensor=extra[0],
        )
    for name, record in records.items():
        t = tensors.get(name)
        if t is None:
            raise ContentHashError(
                f"{path}: corrupt: tensor {name!r} is recorded in the content hash but missing from the file",
                path=path,
                tensor=name,
            )
        found = (dtype_name(t.dtype), list(t.shape))
        if found != (record["dtype"], record["shape"]):
            raise ContentHashError(
                f"{path}: corrupt: tensor {name!r} is {found[0]} {found[1]} in the file but was written as "
                f"{record['dtype']} {record['shape']}",
                path=path,
                tensor=name,
            )
    digests = _digests(tensors[name] for name in records)
    for (name, record), digest in zip(records.items(), digests, strict=True):
        if digest != record["sha256"]:
            raise ContentHashError(
                f"{path}: corrupt: the bytes of tensor {name!r} differ from their SHA-256 recorded when the "
                "file was written",
                path=path,
                tensor=name,
            )
    return len(records)


def verify(meta: dict[str, Any], tensors: dict[str, torch.Tensor], path: str) -> int | None:
    """Check metadata and tensors; ``None`` for a file written before hashes were recorded."""
    if FIELD not in meta:
        return None
    verify_metadata(meta, path)
    return verify_tensors(meta, tensors, path)
