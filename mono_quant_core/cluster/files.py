"""A job's input files on a worker: the same paths on a shared filesystem, or shipped bytes in a temporary folder.

The caller lists the files a job reads (:func:`manifest`: the script and the
``.py`` files beside it, the checkpoint with a sharded checkpoint's shards or a
checkpoint folder's files, the calibration folder's files) with their sizes and
SHA-256.  The worker checks them at the same paths (:func:`differences`); when
every one is there with the same size and hash it reads them in place, else the
caller ships every file's bytes through Ray's object store and the worker writes
them into a temporary folder under the same names (:func:`materialize`), so the
file names the output records (``source.script``, ``source.checkpoint``) are
the same as a local run's.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from collections.abc import Mapping
from dataclasses import dataclass

from ..jobs import Job
from ..progress import CancelLike, check_cancel

ROLES = ("script", "checkpoint", "calibration")
_CHUNK = 1 << 20


@dataclass(frozen=True)
class InputFile:
    """One file a job reads: its role, the caller's path, its path under the role's folder, size and hash."""

    role: str
    path: str
    relative: str
    size: int
    sha256: str


@dataclass(frozen=True)
class Manifest:
    """Every input file of a job and each role's root (the path the job names) on the caller."""

    files: tuple[InputFile, ...]
    roots: tuple[tuple[str, str], ...]

    @property
    def total_bytes(self) -> int:
        return sum(f.size for f in self.files)


_hashes: dict[tuple[str, int, int], str] = {}
_hash_lock = threading.Lock()


def sha256_of(path: str, cancel: CancelLike | None = None) -> str:
    """The file's SHA-256, remembered per (path, size, mtime) so twelve jobs on one checkpoint hash it once.

    ``cancel`` is checked between blocks (a 14 GB checkpoint takes a while): Cancelled when set."""
    stat = os.stat(path)
    key = (os.path.abspath(path), stat.st_size, stat.st_mtime_ns)
    with _hash_lock:
        known = _hashes.get(key)
    if known is not None:
        return known
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(_CHUNK):
            check_cancel(cancel)
            digest.update(block)
    value = digest.hexdigest()
    with _hash_lock:
        _hashes[key] = value
    return value


def manifest(job: Job, cancel: CancelLike | None = None) -> Manifest:
    """The files ``job`` reads, found on the caller's side (``cancel``: checked while hashing them)."""
    files: list[InputFile] = []
    roots: list[tuple[str, str]] = []
    script = os.path.abspath(job.script)
    roots.append(("script", script))
    folder = os.path.dirname(script)
    neighbours = sorted(n for n in os.listdir(folder) if n.endswith(".py") and os.path.isfile(os.path.join(folder, n)))
    for name in [os.path.basename(script), *(n for n in neighbours if n != os.path.basename(script))]:
        files.append(_entry("script", os.path.join(folder, name), name, cancel))
    if job.checkpoint is not None:
        checkpoint = os.path.abspath(job.checkpoint)
        roots.append(("checkpoint", checkpoint))
        files += (
            _tree("checkpoint", checkpoint, cancel)
            if os.path.isdir(checkpoint)
            else _checkpoint_files(checkpoint, cancel)
        )
    if job.calibration_folder is not None:
        calibration = os.path.abspath(job.calibration_folder)
        roots.append(("calibration", calibration))
        files += _tree("calibration", calibration, cancel)
    return Manifest(tuple(files), tuple(roots))


def _entry(role: str, path: str, relative: str, cancel: CancelLike | None) -> InputFile:
    return InputFile(role, path, relative.replace(os.sep, "/"), os.path.getsize(path), sha256_of(path, cancel))


def _tree(role: str, root: str, cancel: CancelLike | None) -> list[InputFile]:
    """Every file under the folder ``root``, named ``<root's name>/<path inside>``."""
    base = os.path.dirname(root.rstrip(os.sep))
    found = []
    for folder, dirs, names in os.walk(root):
        dirs.sort()
        for name in sorted(names):
            path = os.path.join(folder, name)
            if os.path.isfile(path):
                found.append(_entry(role, path, os.path.relpath(path, base), cancel))
    return found


def _checkpoint_files(path: str, cancel: CancelLike | None) -> list[InputFile]:
    """A checkpoint file, and a sharded checkpoint's shards beside its index."""
    files = [_entry("checkpoint", path, os.path.basename(path), cancel)]
    if path.lower().endswith(".index.json"):
        try:
            with open(path, encoding="utf-8") as f:
                shards = sorted(set(json.load(f)["weight_map"].values()))
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return files  # run_job reports the broken index as a local run does
        folder = os.path.dirname(path)
        files += [
            _entry("checkpoint", os.path.join(folder, s), s, cancel)
            for s in shards
            if os.path.isfile(os.path.join(folder, s))
        ]
    return files


def differences(files: tuple[InputFile, ...]) -> list[str]:
    """The caller's files this machine does not have at the same path with the same size and hash."""
    missing = []
    for f in files:
        try:
            same = os.path.isfile(f.path) and os.path.getsize(f.path) == f.size and sha256_of(f.path) == f.sha256
        except OSError:
            same = False
        if not same:
            missing.append(f.path)
    return missing


def materialize(man: Manifest, contents: Mapping[str, bytes], folder: str) -> dict[str, str]:
    """Write the shipped files under ``folder/<role>/``; returns each role's root path there.

    ``contents`` maps an input's caller path to its bytes.  A file whose bytes do not hash to the
    manifest's SHA-256 is refused (a corrupt transfer must not quantize silently).
    """
    for f in man.files:
        data = contents[f.path]
        if hashlib.sha256(data).hexdigest() != f.sha256:
            raise OSError(f"{f.path}: the shipped bytes do not match the file's SHA-256")
        target = os.path.join(folder, f.role, *f.relative.split("/"))
        os.makedirs(os.path.dirname(target), exist_ok=True)
        with open(target, "wb") as out:
            out.write(data)
    roots = {}
    for role, root in man.roots:
        roots[role] = os.path.join(folder, role, os.path.basename(root.rstrip(os.sep)))
    return roots


def read_bytes(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()
