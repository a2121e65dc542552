"""Give back the pages of a memory-mapped checkpoint tensor once it was copied.

``torch.load(mmap=True)`` maps the whole file; every page a copy touches stays
in the process's resident set until the last tensor of the file is freed, so
copying a 1 GB checkpoint into a model would show 1 GB model + 1 GB mapping.
``madvise(MADV_DONTNEED)`` drops those pages after each copy; they are
re-read from the file if touched again (we never write to them, so nothing is
lost).  On ordinary memory the same call would zero it, so pages are released
only inside the file's own mappings, as listed by ``/proc/self/maps``.
Linux only; elsewhere a no-op.
"""

from __future__ import annotations

import ctypes
import mmap
import os
import sys
from pathlib import Path

import torch

_MADV_DONTNEED = 4
_PAGE = mmap.PAGESIZE
_madvise = None
_malloc_trim = None
if sys.platform.startswith("linux"):
    try:
        _libc = ctypes.CDLL(None, use_errno=True)
        _madvise = _libc.madvise
        _madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
        _madvise.restype = ctypes.c_int
    except (OSError, AttributeError):
        _madvise = None
    try:
        _malloc_trim = _libc.malloc_trim  # glibc only
        _malloc_trim.argtypes = [ctypes.c_size_t]
        _malloc_trim.restype = ctypes.c_int
    except (NameError, AttributeError):
        _malloc_trim = None


def file_mappings(path: Path) -> list[tuple[int, int]]:
    """Address ranges where ``path`` is mapped into this process (empty when unknown)."""
    if _madvise is None:
        return []
    target = os.path.realpath(path)
    ranges = []
    try:
        with open("/proc/self/maps") as maps:
            for line in maps:
                fields = line.split(maxsplit=5)
                if len(fields) == 6 and fields[5].rstrip("\n") == target:
                    lo, hi = fields[0].split("-")
                    ranges.append((int(lo, 16), int(hi, 16)))
    except OSError:
        return []
    return ranges


def release_pages(tensor: torch.Tensor, mappings: list[tuple[int, int]]) -> None:
    """Drop the resident pages under ``tensor``'s storage if it lies inside one of ``mappings``."""
    if _madvise is None or tensor.device.type != "cpu":
        return
    storage = tensor.untyped_storage()
    start, size = storage.data_ptr(), storage.nbytes()
    if size == 0:
        return
    # Round outwards to whole pages; mappings are page-aligned, and the
    # neighbouring bytes belong to the same never-written file mapping.
    lo = start - start % _PAGE
    hi = -(-(start + size) // _PAGE) * _PAGE
    if any(m_lo <= lo and hi <= m_hi for m_lo, m_hi in mappings):
        _madvise(lo, hi - lo, _MADV_DONTNEED)


def trim_heap() -> None:
    """Give the allocator's free memory back to the system (glibc ``malloc_trim``; elsewhere a no-op).

    Streaming frees one layer's float weights after another; glibc's malloc raises its mmap
    threshold after the first large free, so later layers come from the heap, between the
    quantized codes that stay, and their freed memory would stay resident.  Trimming after each
    layer returns those pages (``MADV_DONTNEED`` on free chunks inside the heap too)."""
    if _malloc_trim is not None:
        _malloc_trim(0)
