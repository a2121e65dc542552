"""Reading quantized files: metadata (cheap) and tensors, with errors that name the file."""

from __future__ import annotations

import os
from typing import Any

import torch

from ..errors import ContentHashError, QuantizedFileError
from . import content_hash, pt_file, safetensors_file
from .metadata import METADATA_KEY, parse
from .sharded import INDEX_SUFFIX, ShardedIndex, check_shard, find_output, read_index, shard_record


def sniff_format(path: str) -> str:
    """``"pt"`` (zip or legacy pickle) or ``"safetensors"``, from the first bytes, not the name."""
    try:
        with open(path, "rb") as f:
            head = f.read(9)
    except FileNotFoundError as exc:
        raise QuantizedFileError(f"{path}: no such file") from exc
    except OSError as exc:
        raise QuantizedFileError(f"{path}: cannot read the file: {exc.strerror or exc}") from exc
    if not head:
        raise QuantizedFileError(f"{path}: the file is empty")
    if head[8:9] == b"{":  # safetensors: u64 header length, then the JSON header
        return "safetensors"
    if head.startswith(b"PK\x03\x04") or head[:1] == b"\x80":
        return "pt"
    return "safetensors"


def _foreign(path: str, fmt: str) -> QuantizedFileError:
    plain = "safetensors.torch.load_file(path)" if fmt == "safetensors" else "torch.load(path, weights_only=True)"
    return QuantizedFileError(
        f"{path}: a plain {'safetensors' if fmt == 'safetensors' else 'PyTorch'} file, not written by "
        f"mono-quant (it has no '{METADATA_KEY}' metadata); load it plainly with {plain}, "
        "or use it as a float checkpoint"
    )


def _safetensors_metadata(path: str) -> dict[str, Any]:
    return read_summary(path)[1]


def is_index(path: str) -> bool:
    """Whether ``path`` names a sharded output's index (``*.index.json``)."""
    return path.lower().endswith(INDEX_SUFFIX)


def resolve(path: str | os.PathLike) -> str:
    """The file to read for ``path``: itself, or the index of a sharded output when ``path`` is
    its folder, one of its shards, or the name given to ``save_quantized`` (which is not there)."""
    path = os.fspath(path)
    found = find_output(path)
    if found is not None:
        return found
    if is_index(path) or not os.path.isfile(path) or sniff_format(path) != "safetensors":
        return path
    text = (safetensors_file.read_header(path).get("__metadata__") or {}).get(METADATA_KEY)
    record = shard_record(text) if isinstance(text, str) else None
    if record is None:
        return path
    name = record.get("index")
    index = os.path.join(os.path.dirname(path), str(name))
    if not isinstance(name, str) or os.path.basename(name) != name or not os.path.isfile(index):
        raise QuantizedFileError(
            f"{path}: shard {record.get('number')} of {record.get('of')} of a sharded mono-quant output, "
            f"but its index {name!r} is not in the folder; the index is needed to open the shards"
        )
    return index


def output_files(path: str | os.PathLike) -> list[str]:
    """Every file of the quantized output at ``path``: the one file, or the index and its shards."""
    path = resolve(path)
    if is_index(path):
        return [path, *read_index(path).shard_paths]
    return [path]


def output_bytes(path: str | os.PathLike) -> int:
    """The size on disk of the output at ``path`` (for a sharded one: the index and every shard)."""
    return sum(os.path.getsize(p) for p in output_files(path))


def _sharded_summary(path: str) -> tuple[ShardedIndex, dict[str, Any], dict[str, tuple[str, list[int]]]]:
    """Index, metadata and tensor table of a sharded output, after checking every shard's header."""
    index = read_index(path)
    meta = parse(index.text, path)
    table: dict[str, tuple[str, list[int]]] = {}
    for shard, shard_path in zip(index.shards, index.shard_paths, strict=True):
        if not os.path.isfile(shard_path):
            names = index.tensors_of(shard)
            raise QuantizedFileError(
                f"{path}: shard {shard} is missing from the folder (it holds {len(names)} tensors, "
                f"e.g. {names[0]!r}); the output is incomplete, save it again"
            )
        header = safetensors_file.read_header(shard_path)
        check_shard(index, shard, header, meta)
        table.update((k, (v["dtype"], list(v["shape"]))) for k, v in header.items() if k != "__metadata__")
    return index, meta, {name: table[name] for name in index.weight_map}


def read_summary(path: str | os.PathLike) -> tuple[str, dict[str, Any], dict[str, tuple[str, list[int]]]]:
    """``(format, metadata, {name: (dtype, shape)})`` of a quantized file, reading it once
    (a ``.safetensors`` file: its header only; a sharded output: its index and the shards' headers)."""
    path = resolve(path)
    if is_index(path):
        _, meta, table = _sharded_summary(path)
        return "safetensors", meta, table
    fmt = sniff_format(path)
    if fmt == "safetensors":
        header = safetensors_file.read_header(path)
        text = (header.get("__metadata__") or {}).get(METADATA_KEY)
        table = {k: (v["dtype"], list(v["shape"])) for k, v in header.items() if k != "__metadata__"}
    else:
        tensors, text = pt_file.read(path)
        table = {k: (_short_dtype(v.dtype), list(v.shape)) for k, v in tensors.items()}
    if not isinstance(text, str):
        raise _foreign(path, fmt)
    return fmt, parse(text, path), table


def read_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """The parsed ``mono_quant`` metadata of a quantized file (a ``.safetensors`` file: its header only)."""
    return read_summary(path)[1]


def _load_safetensors(path: str) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(path)
    except (SafetensorError, OSError, ValueError, RuntimeError, TypeError) as exc:
        raise QuantizedFileError(f"{path}: corrupt safetensors file ({exc})") from exc


def _read_sharded(path: str) -> tuple[ShardedIndex, dict[str, Any], dict[str, torch.Tensor]]:
    index, meta, _ = _sharded_summary(path)
    tensors: dict[str, torch.Tensor] = {}
    for shard_path in index.shard_paths:
        tensors.update(_load_safetensors(shard_path))
    return index, meta, tensors


def read_file(path: str | os.PathLike) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """(metadata, tensors by state-dict name) of a quantized file or sharded output."""
    path = resolve(path)
    if is_index(path):
        return _read_sharded(path)[1:]
    if sniff_format(path) == "pt":
        tensors, text = pt_file.read(path)
        if text is None:
            raise _foreign(path, "pt")
        return parse(text, path), tensors
    meta = _safetensors_metadata(path)
    return meta, _load_safetensors(path)


def _verify_sharded(index: ShardedIndex, meta: dict[str, Any], tensors: dict[str, torch.Tensor]) -> int | None:
    """Check the metadata against the index, then each shard's tensors, naming the shard that differs."""
    if content_hash.FIELD not in meta:
        return None
    content_hash.verify_metadata(meta, index.path)
    records: dict[str, Any] = meta[content_hash.FIELD]["tensors"]
    for name in [*records, *index.weight_map]:
        if (name in records) != (name in index.weight_map):
            problem = "has no recorded hash" if name in index.weight_map else "is recorded but in no shard"
            raise ContentHashError(
                f"{index.path}: corrupt: tensor {name!r} {problem} (the index's weight_map was changed)",
                path=index.path,
                tensor=name,
            )
    checked = 0
    for shard, shard_path in zip(index.shards, index.shard_paths, strict=True):
        names = index.tensors_of(shard)
        part = {content_hash.FIELD: {"tensors": {n: records[n] for n in names}}}
        checked += content_hash.verify_tensors(part, {n: tensors[n] for n in names}, shard_path)
    return checked


def read_verified(path: str | os.PathLike) -> tuple[dict[str, Any], dict[str, torch.Tensor], int | None]:
    """(metadata, tensors, number of tensors checked) after checking the content hash.

    Raises ``ContentHashError`` (a ``QuantizedFileError``) naming the file (for a sharded
    output: the shard) and the first tensor that differs; the count is None for a file
    without hashes.
    """
    path = resolve(path)
    if is_index(path):
        index, meta, tensors = _read_sharded(path)
        return meta, tensors, _verify_sharded(index, meta, tensors)
    meta, tensors = read_file(path)
    return meta, tensors, content_hash.verify(meta, tensors, path)


def _short_dtype(dtype: torch.dtype) -> str:
    return {v: k for k, v in safetensors_file.TORCH_DTYPES.items()}.get(dtype, str(dtype))
