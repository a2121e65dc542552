"""Open a checkpoint file without executing code and without a second copy in memory.

``.pt/.pth/.bin/.ckpt`` go through ``torch.load(weights_only=True, mmap=True)``
(legacy non-zip files without mmap); ``.safetensors`` and sharded
``*.safetensors.index.json`` through ``safetensors_files``.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import re
import struct
import zipfile
from pathlib import Path

import torch

from ..config import SAFETENSORS_INDEX_SUFFIX, SAFETENSORS_SUFFIX, TORCH_CHECKPOINT_SUFFIXES
from ..errors import CheckpointError
from .checkpoint_source import CheckpointEntry, CheckpointSource, Chunk
from .checkpoint_unwrap import checkpoint_entries
from .file_damage import describe_damage
from .output_files import mapping_marker, refusal
from .page_release import file_mappings, release_pages
from .safetensors_files import open_safetensors, open_sharded, shard_map

# The suffixes are defined in config (torch-free), where the GUI reads them too.
INDEX_SUFFIX = ".index.json"
SUPPORTED = ", ".join((*TORCH_CHECKPOINT_SUFFIXES, SAFETENSORS_SUFFIX, "*" + SAFETENSORS_INDEX_SUFFIX))

# What torch.load / safetensors / numpy raise on a damaged file: an unpickler
# fed garbage fails with almost any error type.
UNREADABLE = (
    OSError,
    EOFError,
    ValueError,
    KeyError,
    IndexError,
    TypeError,
    AttributeError,
    RuntimeError,
    struct.error,
    zipfile.BadZipFile,
)

RESAVE_HINT = (
    "Re-save the weights as a plain state dict, where you trust the file: "
    "torch.save(model.state_dict(), path) (for a Lightning checkpoint: "
    "torch.save(torch.load(path, weights_only=False)['state_dict'], new_path))"
)


def open_checkpoint(path: str | os.PathLike) -> CheckpointSource:
    """Open a checkpoint and list its candidate state dicts; refuses files that need pickled code
    and mono-quant outputs (``QuantizedCheckpointError``)."""
    file = Path(path).expanduser().resolve()
    if not file.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    name = file.name.lower()
    if name.endswith(SAFETENSORS_INDEX_SUFFIX):
        return open_sharded(file)
    if name.endswith(SAFETENSORS_SUFFIX):
        return open_safetensors(file)
    if name.endswith(TORCH_CHECKPOINT_SUFFIXES):
        return _open_torch(file)
    raise CheckpointError(f"{file.name}: unsupported checkpoint type; supported: {SUPPORTED}")


def checkpoint_sha256(path: str | os.PathLike) -> str:
    """SHA-256 of the file; for a sharded index, of the index followed by its shards in name order."""
    file = Path(path).resolve()
    digest = hashlib.sha256()
    files = [file]
    if file.name.lower().endswith(INDEX_SUFFIX):
        files += sorted(set(shard_map(file).values()), key=lambda p: p.name)
    for part in files:
        with open(part, "rb") as f:
            while block := f.read(1 << 20):
                digest.update(block)
    return digest.hexdigest()


def _open_torch(file: Path) -> CheckpointSource:
    mapped = True
    try:
        obj = torch.load(file, map_location="cpu", weights_only=True, mmap=True)
    except RuntimeError as exc:
        if "mmap" not in str(exc):
            raise CheckpointError(_unreadable(file, exc)) from exc
        mapped = False  # a legacy (pre-zip) file: mmap needs the zip format
        obj = _load_unmapped(file)
    except pickle.UnpicklingError as exc:
        raise CheckpointError(_pickle_refusal(file, exc)) from exc
    except UNREADABLE as exc:
        raise CheckpointError(_unreadable(file, exc)) from exc
    marker = mapping_marker(obj)
    if marker is not None:
        raise refusal(file, "pt", marker)
    found = checkpoint_entries(obj, file.name)
    tensors = {entry.path: named for entry, named in found}
    mappings = file_mappings(file) if mapped else []

    def read(entry: CheckpointEntry, names: list[str]) -> Chunk:
        return {n: tensors[entry.path][n] for n in names}

    def release(chunk: Chunk) -> None:
        for tensor in chunk.values():
            release_pages(tensor, mappings)

    return CheckpointSource(file, [entry for entry, _ in found], reader=read, release=release if mappings else None)


def _load_unmapped(file: Path) -> object:
    try:
        return torch.load(file, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise CheckpointError(_pickle_refusal(file, exc)) from exc
    except UNREADABLE as exc:
        raise CheckpointError(_unreadable(file, exc)) from exc


def _unreadable(file: Path, exc: Exception) -> str:
    return f"{file.name}: not a readable PyTorch checkpoint: {describe_damage(file, exc)}"


def pickled_global(exc: Exception) -> str | None:
    """The ``module.name`` a weights_only refusal names, or None (the file is just corrupt)."""
    found = re.search(r"GLOBAL ([A-Za-z_]\w*(?:\.[A-Za-z_]\w*)+)\b", str(exc))
    return found.group(1) if found else None


def _pickle_refusal(file: Path, exc: Exception) -> str:
    """Explain a weights_only refusal: code or classes it would need, or plain corruption."""
    culprit = pickled_global(exc)
    if culprit is None:
        return _unreadable(file, exc)
    return (
        f"{file.name}: refused: loading it would need the pickled object {culprit}, "
        "and checkpoints are read with weights_only=True so that they can never run code. " + RESAVE_HINT
    )
