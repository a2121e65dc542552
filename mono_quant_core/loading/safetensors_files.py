"""``.safetensors`` files and sharded ``*.safetensors.index.json`` checkpoints."""

from __future__ import annotations

import io
import json
import struct
import sys
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open

from ..errors import CheckpointError
from .checkpoint_source import CheckpointEntry, CheckpointSource, Chunk, TensorInfo
from .file_damage import describe_damage
from .output_files import header_marker, refusal

_DTYPES = {
    "F64": "float64",
    "F32": "float32",
    "F16": "float16",
    "BF16": "bfloat16",
    "I64": "int64",
    "I32": "int32",
    "I16": "int16",
    "I8": "int8",
    "U8": "uint8",
    "BOOL": "bool",
    "F8_E4M3": "float8_e4m3fn",
    "F8_E5M2": "float8_e5m2",
}


def open_safetensors(file: Path) -> CheckpointSource:
    """One ``.safetensors`` file: names, shapes and dtypes from its header."""
    return _open_files(file, [file])


def open_sharded(index: Path) -> CheckpointSource:
    """A sharded checkpoint: every tensor its ``weight_map`` lists, from its shard."""
    shards = shard_map(index)
    source = _open_files(index, sorted(set(shards.values()), key=lambda p: p.name))
    missing = sorted(set(shards) - set(source.entries[0].infos))
    if missing:
        raise CheckpointError(
            f"{index.name}: {len(missing)} tensors listed in weight_map are not in their shard "
            f"files: {', '.join(missing[:10])}"
        )
    return source


def shard_map(index: Path) -> dict[str, Path]:
    """Tensor name -> shard file, from an index's ``weight_map``; every shard must exist."""
    try:
        weight_map = json.loads(index.read_text())["weight_map"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise CheckpointError(f"{index.name}: not a safetensors index with a weight_map: {exc}") from exc
    if not isinstance(weight_map, dict):
        raise CheckpointError(f"{index.name}: weight_map must map tensor names to shard files")
    shards = {}
    for name, shard in weight_map.items():
        file = (index.parent / str(shard)).resolve()
        if not file.is_file():
            raise CheckpointError(f"{index.name}: shard {shard} (for {name}) not found")
        shards[name] = file
    return shards


def _open_files(path: Path, files: list[Path]) -> CheckpointSource:
    infos: dict[str, TensorInfo] = {}
    where: dict[str, Path] = {}
    for file in files:
        try:
            with safe_open(str(file), framework="pt", device="cpu") as f:
                marker = header_marker(f.metadata())
                for name in f.keys():  # noqa: SIM118 (safe_open is not iterable)
                    piece = f.get_slice(name)
                    shape = tuple(piece.get_shape())
                    dtype = _DTYPES.get(piece.get_dtype(), piece.get_dtype().lower())
                    infos[name] = TensorInfo(shape, dtype, _nbytes(shape, dtype))
                    where[name] = file
        except (OSError, ValueError, RuntimeError, SafetensorError) as exc:
            raise CheckpointError(f"{file.name}: not a readable checkpoint: {describe_damage(file, exc)}") from exc
        if marker is not None:  # a sharded output is named by the index the user gave
            raise refusal(path, "safetensors", marker)
    if not infos:
        raise CheckpointError(f"{path.name}: contains no tensors")
    return CheckpointSource(
        path, [CheckpointEntry((), infos)], reader=lambda _entry, names: _read(where, names), owned=True
    )


def _read(where: dict[str, Path], names: list[str]) -> Chunk:
    """The named tensors, each read with plain file reads into memory of its own.

    Not through safetensors' memory map: its tensors are views of pages that stay resident
    while the file is open, so a copy of a large tensor would briefly cost twice its size, and
    a view kept after the file closed is not the caller's to keep.  The header (already checked
    by ``_open_files``) gives each tensor's dtype, shape and byte range.
    """
    by_file: dict[Path, list[str]] = {}
    for name in names:
        by_file.setdefault(where[name], []).append(name)
    out: Chunk = {}
    for file, in_file in by_file.items():
        try:
            with open(file, "rb") as f:
                (length,) = struct.unpack("<Q", f.read(8))
                header = json.loads(f.read(length))
                for name in in_file:
                    out[name] = _read_tensor(f, 8 + length, header[name], file, name)
        except (OSError, ValueError, KeyError, RuntimeError) as exc:
            raise CheckpointError(f"{file.name}: cannot read tensors: {exc}") from exc
    return out


def _read_tensor(f: io.BufferedReader, base: int, info: dict, file: Path, name: str) -> torch.Tensor:
    dtype = getattr(torch, _DTYPES.get(info["dtype"], str(info["dtype"]).lower()), None)
    if not isinstance(dtype, torch.dtype):
        raise ValueError(f"tensor {name}: unsupported dtype {info['dtype']}")
    begin, end = (int(v) for v in info["data_offsets"])
    t = torch.empty([int(d) for d in info["shape"]], dtype=dtype)
    if t.numel() * t.element_size() != end - begin:
        raise ValueError(f"tensor {name}: {end - begin} bytes for shape {info['shape']} {info['dtype']}")
    if end > begin:
        f.seek(base + begin)
        got = f.readinto(memoryview(t.view(-1).view(torch.uint8).numpy()))  # type: ignore[arg-type]
        if got != end - begin:
            raise ValueError(f"tensor {name}: the file ends after {got} of its {end - begin} bytes")
    if sys.byteorder != "little":  # safetensors stores little-endian
        t = t.view(-1).view(torch.uint8).view(-1, t.element_size()).flip(1).contiguous().view(dtype).view(t.shape)
    return t


def _nbytes(shape: tuple[int, ...], dtype: str) -> int:
    known = getattr(torch, dtype, None)
    count = 1
    for dim in shape:
        count *= dim
    return count * (known.itemsize if isinstance(known, torch.dtype) else 1)
