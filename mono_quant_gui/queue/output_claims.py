"""Output files being written right now, so two writers in this process never write the same file.

The queue and the main window's Save As run on different threads and share no
objects; this registry is the one thing they share.  Each claims the output
path before writing and releases it after; a second claim of the same file
(after resolving links and case) is refused with a message naming the writer.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator

from mono_quant_core.errors import MonoQuantError

_lock = threading.Lock()
_writers: dict[str, str] = {}


class OutputBusy(MonoQuantError):
    """Another part of the application is writing the same output file."""


def _key(path: str | os.PathLike) -> str:
    return os.path.normcase(os.path.realpath(os.fspath(path)))


def claim(path: str | os.PathLike, writer: str) -> None:
    """Mark ``path`` as being written by ``writer`` (e.g. ``queue job "a.int8"``); OutputBusy if taken."""
    key = _key(path)
    with _lock:
        holder = _writers.get(key)
        if holder is not None:
            raise OutputBusy(
                f"{os.fspath(path)}: {holder} is writing this file right now; "
                "wait for it to finish or choose another output file"
            )
        _writers[key] = writer


def release(path: str | os.PathLike) -> None:
    """Forget the claim on ``path`` (no error when there is none)."""
    with _lock:
        _writers.pop(_key(path), None)


def writer_of(path: str | os.PathLike) -> str | None:
    """Who is writing ``path`` now, or None."""
    with _lock:
        return _writers.get(_key(path))


@contextlib.contextmanager
def claimed(path: str | os.PathLike, writer: str) -> Iterator[None]:
    """``with claimed(path, "Save As"):`` hold ``path`` while writing it (any thread)."""
    claim(path, writer)
    try:
        yield
    finally:
        release(path)
