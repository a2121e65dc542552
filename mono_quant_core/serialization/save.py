"""``save_quantized``: write a quantization result as ``.safetensors`` or ``.pt``, atomically."""

from __future__ import annotations

import contextlib
import json
import os
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, BinaryIO

import torch
from torch import nn

from ..errors import ConfigError
from ..folding import folded_records
from ..modules.base import QuantizedModule, layout_only
from . import pt_file, safetensors_file, sharded
from .atomic import atomic_write
from .content_hash import add_content_hash
from .file_tensors import file_tensors
from .metadata import FORMAT_VERSION, METADATA_KEY, dumps, layer_record, source_record, versions

if TYPE_CHECKING:
    from ..quantizer import QuantResult

#: Extension -> format.
FORMATS = {".safetensors": "safetensors", ".pt": "pt", ".pth": "pt"}


def file_format(path: str) -> str:
    """``"safetensors"`` or ``"pt"`` from the extension; anything else is a ConfigError."""
    ext = os.path.splitext(path)[1].lower()
    if ext not in FORMATS:
        raise ConfigError(f"{path}: unknown output extension {ext or '(none)'!r}; use one of {', '.join(FORMATS)}")
    return FORMATS[ext]


def quantized_layers(model: nn.Module) -> list[tuple[str, QuantizedModule]]:
    """Every quantized module under every name it is reachable by (shared modules twice)."""
    found: list[tuple[str, QuantizedModule]] = []
    names: set[str] = set()
    for name, module in model.named_modules(remove_duplicate=False):
        if not isinstance(module, QuantizedModule):
            continue
        parts = name.split(".") if name else []
        if "" in names or any(".".join(parts[:i]) in names for i in range(1, len(parts))):
            continue  # inside a quantized module
        names.add(name)
        found.append((name, module))
    return found


def build_metadata(result: QuantResult, aliases: dict[str, str], with_source: bool = True) -> dict[str, Any]:
    """The ``mono_quant`` metadata of ``result`` (see docs/file-format.md).  ``with_source=False``
    leaves the inputs' record empty (validation's round trip: no checkpoint hash is computed)."""
    report = result.report
    sqnr = {layer.name: layer.weight_sqnr_db for layer in report.layers}
    report_dict = report.to_dict()
    # A file cannot know its own size when it is written; inspect reads it from disk.
    report_dict["file_bytes"] = report_dict["estimated_file_bytes"] = None
    meta = {
        "format_version": FORMAT_VERSION,
        "versions": versions(),
        "model_class": type(result.model).__name__,
        "config": result.config.to_dict(),
        "layers": [
            layer_record(name, module.quant_meta(), sqnr.get(name)) for name, module in quantized_layers(result.model)
        ],
        "skipped": [{"name": s.name, "type": s.type, "reason": s.reason} for s in report.skipped],
        "calibration": dict(result.calibration_info or {}),
        "source": source_record(result.source if with_source else None),
        "aliases": aliases,
        "report": report_dict,
    }
    folded = folded_records(result.model)
    if folded:  # BatchNorms folded into their convolution: identities when loaded (docs/file-format.md)
        meta["folded_batchnorm"] = folded
    return meta


def _input_files(source: dict[str, Any] | None) -> list[tuple[str, str]]:
    """(file, what) of the model's inputs: script, checkpoint, and a sharded checkpoint's shards."""
    found = []
    for key, what in (("checkpoint_path", "input checkpoint"), ("script_path", "model script")):
        other = (source or {}).get(key)
        if other and os.path.isfile(other):
            found.append((os.fspath(other), what))
    checkpoint = (source or {}).get("checkpoint_path")
    if checkpoint and os.fspath(checkpoint).lower().endswith(sharded.INDEX_SUFFIX) and os.path.isfile(checkpoint):
        with contextlib.suppress(OSError, ValueError, AttributeError, TypeError):
            with open(checkpoint, encoding="utf-8") as f:
                shards = set(json.load(f)["weight_map"].values())
            folder = os.path.dirname(os.fspath(checkpoint))
            found += [(os.path.join(folder, str(s)), "input checkpoint's shard") for s in sorted(shards)]
    return found


def _refuse_inputs(path: str, source: dict[str, Any] | None, targets: list[str] | None = None) -> None:
    """Refuse to write over the model's script or checkpoint (``targets``: every file the save may write)."""
    if os.path.isdir(path):
        raise ConfigError(f"{path}: is a folder; give a file name ending in .safetensors or .pt")
    inputs = _input_files(source)
    for target in targets or [path]:
        if not os.path.exists(target):
            continue
        for other, what in inputs:
            if os.path.exists(other) and os.path.samefile(target, other):
                raise ConfigError(f"{target}: is the {what}; refusing to overwrite it, choose another output file")


def estimate_file_bytes(result: QuantResult) -> int:
    """The exact size of the ``.safetensors`` file ``save_quantized`` would write now."""
    with layout_only():  # shapes and dtypes only: codes held by a kernel's pack stay there
        tensors, aliases = file_tensors(result.model)
    meta = build_metadata(result, aliases)
    add_content_hash(meta, tensors, hash_data=False)  # placeholder digests have the real digests' length
    return safetensors_file.layout(tensors, {METADATA_KEY: dumps(meta)})[2]


def _write_safetensors(f: BinaryIO, meta: dict[str, Any], tensors: dict[str, torch.Tensor]) -> None:
    """The tensors first, hashed meanwhile on another thread, then the header with their digests.

    Placeholder digests have the real ones' length, so the header's size (and every data
    offset) is known before any tensor is hashed: the data section is written and synced
    while the hashes are computed (hashlib and the file writes both release the GIL), and
    the header is written over its place at the end.  The file is the temporary file of
    ``atomic_write``: nobody sees it before it is whole.
    """
    estimate = dict(meta)
    add_content_hash(estimate, tensors, hash_data=False)
    placeholder, ordered, _ = safetensors_file.layout(tensors, {METADATA_KEY: dumps(estimate)})
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="mono-quant-hash") as pool:
        hashing = pool.submit(add_content_hash, meta, tensors)
        try:
            f.seek(len(placeholder))
            safetensors_file.write_data(f, ordered)
            f.flush()
            os.fsync(f.fileno())  # the bulk of the data reaches the disk while the hashes are computed
        finally:
            hashing.result()  # never leave the thread running (its error, if any, is raised here)
    header, _, _ = safetensors_file.layout(tensors, {METADATA_KEY: dumps(meta)})
    if len(header) != len(placeholder):  # cannot happen (digests have one length); stay correct anyway
        f.seek(0)
        f.truncate()
        safetensors_file.write(f, header, ordered)
        return
    f.seek(0)
    f.write(header)


#: ``save_quantized(format=...)``: the file formats and the compressed-tensors folder.
SAVE_FORMATS = ("safetensors", "pt", "compressed-tensors")


def save_quantized(
    result: QuantResult,
    path: str | os.PathLike,
    format: str | None = None,
    max_shard_bytes: int | str | None = None,
) -> int:
    """Write ``result`` to ``path`` (``.safetensors``, ``.pt`` or ``.pth``); returns the bytes written.

    ``format``: None (from the extension, as always), ``"safetensors"``, ``"pt"``, or
    ``"compressed-tensors"``: a folder that transformers and vLLM load
    (``compressed_tensors.save_compressed_tensors``; ``max_shard_bytes`` splits its weights
    into shards, 5 GB by default).

    ``max_shard_bytes`` (bytes, or a size such as ``"5GB"`` or ``"512MiB"``): a
    ``.safetensors`` output whose tensors exceed it is written as shards
    ``<name>-00001-of-0000N.safetensors`` plus ``<path>.index.json`` (``sharded.py``,
    docs/file-format.md "Sharded files"); None (the default) writes one file whatever
    the size.  Every read function opens the index, the folder, a shard, or ``path``.

    The metadata records a SHA-256 of every tensor and of itself (``content_hash``),
    which ``load_quantized`` checks.  Sets ``result.report.file_bytes``.  ``compression_ratio`` stays the
    in-memory ratio (original_bytes / quantized_bytes).
    """
    path = os.fspath(path)
    if format not in (None, *SAVE_FORMATS):
        raise ConfigError(f"format: {format!r} is not allowed; choose one of {', '.join(SAVE_FORMATS)}")
    shard_bytes = sharded.parse_size(max_shard_bytes)
    if format == "compressed-tensors":
        from .compressed_tensors import DEFAULT_MAX_SHARD_BYTES, save_compressed_tensors

        return save_compressed_tensors(result, path, shard_bytes or DEFAULT_MAX_SHARD_BYTES)
    fmt = format or file_format(path)
    if shard_bytes is not None and fmt != "safetensors":
        raise ConfigError(f"{path}: max_shard_bytes: only .safetensors outputs are written in shards")
    _refuse_inputs(path, result.source)
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise ConfigError(f"{path}: the folder {folder} does not exist")
    tensors, aliases = file_tensors(result.model)
    meta = build_metadata(result, aliases)
    count = 1 if shard_bytes is None else len(sharded.split(tensors, shard_bytes))
    if shard_bytes is not None and count > 1:
        targets = [os.path.join(folder, n) for n in sharded.shard_names(path, count)]
        _refuse_inputs(path, result.source, [*targets, sharded.index_path(path)])
        size = sum(os.path.getsize(p) for p in sharded.write_sharded(path, meta, tensors, shard_bytes))
        result.report.file_bytes = size
        return size
    earlier = [p for p in sharded.earlier_output_files(path) if p != path]
    with atomic_write(path) as f:
        if fmt == "safetensors":
            _write_safetensors(f, meta, tensors)
        else:
            add_content_hash(meta, tensors)
            pt_file.write(f, tensors, dumps(meta))
    sharded.remove_files(earlier)  # an earlier sharded output of this name: the new file replaces it
    size = os.path.getsize(path)
    result.report.file_bytes = size
    return size
