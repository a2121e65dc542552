"""Sharded ``.safetensors`` outputs: ``model-00001-of-0000N.safetensors`` files and an index.

``save_quantized(result, "out/model.safetensors", max_shard_bytes=...)`` writes,
when the tensors do not fit in one shard, ``out/model-00001-of-0000N.safetensors``
... and ``out/model.safetensors.index.json`` (docs/file-format.md, "Sharded files"):

- the index is Hugging Face's layout, ``{"metadata": {"total_size": ..., "mono_quant":
  "<the metadata JSON>"}, "weight_map": {tensor: shard}}``, so the full metadata
  (content hash of every tensor of every shard included) lives there once;
- each shard is an ordinary ``.safetensors`` file whose ``__metadata__`` holds a
  small ``mono_quant`` marker (``{"format_version", "shard": {"index", "number",
  "of", "metadata_sha256"}, "config"}``), so a shard alone is recognised as a
  mono-quant output and leads back to its index; ``metadata_sha256`` ties it to
  that index's metadata, so a shard of another save is refused even unverified.

Shards are written one after the other straight from the model's tensors (the
dict ``file_tensors`` returns holds references, no copy), hashed on another
thread meanwhile.  Everything goes to temporary files first; they are renamed
only once every shard and the index are whole and synced, the index last.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import torch

from ..errors import QuantizedFileError
from ..sizes import parse_size as parse_size
from . import safetensors_file
from .atomic import _fsync_folder, _new_file_mode, _remove_quietly, open_temp, write_error
from .content_hash import FIELD, add_content_hash, metadata_digest
from .leftovers import remove_leftovers, temp_prefix
from .metadata import FORMAT_VERSION, METADATA_KEY, dumps

#: What follows an output's name to make its index's name (Hugging Face's convention).
INDEX_SUFFIX = ".index.json"
#: The key of a shard's marker that a full metadata string never has.
SHARD_KEY = "shard"


def index_path(path: str) -> str:
    """``out/model.safetensors`` -> ``out/model.safetensors.index.json``."""
    return path + INDEX_SUFFIX


def shard_names(path: str, count: int) -> list[str]:
    """The shard file names (no folder) of ``path`` split in ``count``."""
    stem = os.path.splitext(os.path.basename(path))[0]
    return [f"{stem}-{i:05d}-of-{count:05d}.safetensors" for i in range(1, count + 1)]


def split(tensors: dict[str, torch.Tensor], max_bytes: int) -> list[dict[str, torch.Tensor]]:
    """Tensors in state-dict order, in shards of at most ``max_bytes`` data bytes (a larger tensor alone)."""
    shards: list[dict[str, torch.Tensor]] = [{}]
    size = 0
    for name, t in tensors.items():
        n = t.numel() * t.element_size()
        if shards[-1] and size + n > max_bytes:
            shards.append({})
            size = 0
        shards[-1][name] = t
        size += n
    return shards


def shard_marker(meta: dict[str, Any], index_name: str, number: int, count: int) -> str:
    """The small ``mono_quant`` entry of shard ``number`` (from 1)."""
    record = {"index": index_name, "number": number, "of": count, "metadata_sha256": metadata_digest(meta)}
    return dumps({"format_version": FORMAT_VERSION, SHARD_KEY: record, "config": meta.get("config", {})})


def shard_record(text: str) -> dict[str, Any] | None:
    """The ``shard`` record of a ``mono_quant`` entry, or None for a whole file's metadata."""
    try:
        data = json.loads(text)
    except ValueError:
        return None
    record = data.get(SHARD_KEY) if isinstance(data, dict) else None
    return record if isinstance(record, dict) else None


# -- writing ---------------------------------------------------------------------------------
class _TempFiles:
    """Temporary files of one save and the targets they become; all or none are renamed in."""

    def __init__(self, folder: str):
        self.folder = folder
        self.pending: list[tuple[str, str]] = []  # (temporary, target)
        self.done: list[str] = []

    @contextlib.contextmanager
    def create(self, target: str) -> Iterator[Any]:
        fd, tmp = tempfile.mkstemp(dir=self.folder, prefix=temp_prefix(target), suffix=".tmp")
        self.pending.append((tmp, target))
        try:
            f = open_temp(fd)
        except BaseException:
            os.close(fd)
            raise
        with f:
            yield f
            f.flush()
            os.fsync(f.fileno())

    def commit(self) -> None:
        """Rename every temporary file over its target, the index last; on a failure put back
        the files they replaced, so the earlier output stays as it was."""
        for tmp, target in self.pending:
            os.chmod(tmp, _new_file_mode(target))
        backups: list[tuple[str, str]] = []
        try:
            for tmp, target in self.pending:
                if os.path.lexists(target):
                    fd, backup = tempfile.mkstemp(dir=self.folder, prefix=temp_prefix(target), suffix=".tmp")
                    os.close(fd)
                    os.replace(target, backup)
                    backups.append((backup, target))
                os.replace(tmp, target)
                self.done.append(target)
        except BaseException:
            for target in self.done:
                _remove_quietly(target)
            for backup, target in reversed(backups):
                with contextlib.suppress(OSError):
                    os.replace(backup, target)
            self.done = []
            raise
        for backup, _ in backups:
            _remove_quietly(backup)
        self.pending = []
        _fsync_folder(self.folder)

    def discard(self) -> None:
        """Remove the temporary files (after a failure)."""
        for tmp, _ in self.pending:
            _remove_quietly(tmp)


def _write_shards(
    files: _TempFiles,
    folder: str,
    names: list[str],
    parts: list[dict[str, torch.Tensor]],
    meta: dict[str, Any],
    index_name: str,
) -> None:
    for number, (name, part) in enumerate(zip(names, parts, strict=True), start=1):
        header, ordered, _ = safetensors_file.layout(
            part, {METADATA_KEY: shard_marker(meta, index_name, number, len(parts))}
        )
        with files.create(os.path.join(folder, name)) as f:
            safetensors_file.write(f, header, ordered)


def write_sharded(path: str, meta: dict[str, Any], tensors: dict[str, torch.Tensor], max_bytes: int) -> list[str]:
    """Write ``tensors`` as shards of ``path`` and its index, atomically; returns the files written.

    ``meta`` gets its ``content_hash`` (over every tensor) here.  An earlier output at
    ``path`` (one file, or an index and its shards) is replaced: its files that the new
    set does not overwrite are removed once the new set is in place.
    """
    folder = os.path.dirname(os.path.abspath(path))
    parts = split(tensors, max_bytes)
    names = shard_names(path, len(parts))
    index = index_path(path)
    index_name = os.path.basename(index)
    weight_map = {tensor: name for name, part in zip(names, parts, strict=True) for tensor in part}
    earlier = earlier_output_files(path)
    remove_leftovers(folder)
    files = _TempFiles(folder)
    try:
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="mono-quant-hash") as pool:
            hashing = pool.submit(add_content_hash, meta, tensors)
            try:
                _write_shards(files, folder, names, parts, meta, index_name)
            finally:
                hashing.result()  # never leave the thread running (its error, if any, is raised here)
        total = sum(t.numel() * t.element_size() for t in tensors.values())
        document = {"metadata": {"total_size": total, METADATA_KEY: dumps(meta)}, "weight_map": weight_map}
        with files.create(index) as f:
            f.write((json.dumps(document, indent=2, ensure_ascii=True) + "\n").encode("ascii"))
        files.commit()
    except OSError as exc:
        files.discard()
        raise write_error(path, exc) from exc
    except BaseException:
        files.discard()
        raise
    written = [os.path.join(folder, n) for n in names] + [index]
    remove_files([f for f in earlier if f not in written])
    return written


def write_file_set(path: str, blobs: dict[str, bytes], last: str) -> list[str]:
    """Files already encoded elsewhere (a job run on a cluster worker) written as the output at
    ``path``: ``blobs`` maps file names in ``path``'s folder to their bytes, ``last`` (the main
    file or the index) is renamed in last.  All or none are renamed in, and an earlier output at
    ``path`` whose files the new set does not overwrite is removed, as :func:`write_sharded` does.
    """
    folder = os.path.dirname(os.path.abspath(path))
    earlier = earlier_output_files(path)
    remove_leftovers(folder)
    files = _TempFiles(folder)
    try:
        for name in sorted(blobs, key=lambda n: n == last):
            with files.create(os.path.join(folder, name)) as f:
                f.write(blobs[name])
        files.commit()
    except OSError as exc:
        files.discard()
        raise write_error(path, exc) from exc
    except BaseException:
        files.discard()
        raise
    written = [os.path.join(folder, name) for name in blobs]
    remove_files([f for f in earlier if f not in written])
    return written


def earlier_output_files(path: str) -> list[str]:
    """The files of a mono-quant output already saved under ``path`` (index first), else []."""
    found: list[str] = []
    index = index_path(path)
    if os.path.isfile(index):
        with contextlib.suppress(QuantizedFileError):
            found += [index, *read_index(index).shard_paths]
    if os.path.isfile(path) and path.lower().endswith(".safetensors"):
        with contextlib.suppress(QuantizedFileError):
            header = safetensors_file.read_header(path)
            if METADATA_KEY in (header.get("__metadata__") or {}):
                found.append(path)
    return found


def remove_files(paths: list[str]) -> None:
    """Remove ``paths`` (an index before its shards), ignoring those already gone."""
    for p in paths:
        _remove_quietly(p)


# -- reading ---------------------------------------------------------------------------------
class ShardedIndex:
    """A parsed index: its path, metadata text, weight map and shard files (in name order)."""

    def __init__(self, path: str, text: str, weight_map: dict[str, str]):
        self.path = path
        self.text = text
        self.weight_map = weight_map
        folder = os.path.dirname(os.path.abspath(path))
        self.shards = sorted(set(weight_map.values()))
        self.shard_paths = [os.path.join(folder, s) for s in self.shards]

    def tensors_of(self, shard: str) -> list[str]:
        return [t for t, s in self.weight_map.items() if s == shard]


def _index_error(path: str, problem: str) -> QuantizedFileError:
    return QuantizedFileError(f"{path}: corrupt: the index {problem}")


def read_index(path: str) -> ShardedIndex:
    """Parse a mono-quant index (no shard is opened); errors name the index and the problem."""
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as exc:
        raise QuantizedFileError(f"{path}: cannot read the file: {exc.strerror or exc}") from exc
    try:
        document = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise _index_error(path, f"is not valid JSON ({exc})") from exc
    if not isinstance(document, dict) or not isinstance(document.get("weight_map"), dict):
        raise _index_error(path, "has no 'weight_map' object (tensor name -> shard file)")
    metadata = document.get("metadata")
    text = metadata.get(METADATA_KEY) if isinstance(metadata, dict) else None
    if not isinstance(text, str):
        raise QuantizedFileError(
            f"{path}: a sharded checkpoint index not written by mono-quant (its metadata has no "
            f"'{METADATA_KEY}' entry); use it as a float checkpoint"
        )
    weight_map = document["weight_map"]
    for tensor, shard in weight_map.items():
        if not isinstance(shard, str) or os.path.basename(shard) != shard or not shard.endswith(".safetensors"):
            raise _index_error(path, f"maps tensor {tensor!r} to {shard!r}, not a .safetensors file in its folder")
    return ShardedIndex(path, text, weight_map)


def check_shard(index: ShardedIndex, shard: str, header: dict[str, Any], meta: dict[str, Any]) -> None:
    """Refuse a shard whose marker or tensor names do not match the index (another save's shard)."""
    where = os.path.join(os.path.dirname(os.path.abspath(index.path)), shard)
    text = (header.get("__metadata__") or {}).get(METADATA_KEY)
    record = shard_record(text) if isinstance(text, str) else None
    if record is None:
        raise QuantizedFileError(f"{where}: not a shard of a mono-quant output (no shard marker in its header)")
    recorded = (meta.get(FIELD) or {}).get("metadata")
    if recorded is not None and record.get("metadata_sha256") != recorded:
        raise QuantizedFileError(
            f"{where}: a shard of another save, not of {os.path.basename(index.path)} (its marker's "
            "metadata_sha256 differs from the index's); save the model again"
        )
    listed, found = set(index.tensors_of(shard)), {k for k in header if k != "__metadata__"}
    if listed != found:
        odd = sorted(listed ^ found)
        raise QuantizedFileError(
            f"{where}: corrupt: its tensors differ from what {os.path.basename(index.path)} lists for it "
            f"({len(odd)} differ, e.g. {odd[0]!r})"
        )


def find_output(path: str) -> str | None:
    """The index that ``path`` (a folder, a shard, or a name that is not there) stands for, else None."""
    if os.path.isdir(path):
        indexes = [os.path.join(path, n) for n in sorted(os.listdir(path)) if n.endswith(".safetensors" + INDEX_SUFFIX)]
        ours = [p for p in indexes if _is_ours(p)]
        if len(ours) != 1:
            what = "no mono-quant index" if not ours else f"{len(ours)} mono-quant indexes"
            raise QuantizedFileError(
                f"{path}: is a folder with {what} (*.safetensors.index.json); give the file to open"
            )
        return ours[0]
    if not os.path.exists(path) and os.path.isfile(index_path(path)):
        return index_path(path)
    return None


def _is_ours(index: str) -> bool:
    try:
        read_index(index)
    except QuantizedFileError:
        return False
    return True
