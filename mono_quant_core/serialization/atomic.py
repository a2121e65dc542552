"""Atomic writes: a temporary file in the target folder, flush + fsync, then ``os.replace``.

Readers never see a half-written file: until the rename, the target path holds
whatever was there before (or nothing).  On any failure the temporary file is
removed and the error names the target and the problem.  A process killed
mid-write (``kill -9``) cannot clean up; the next write into the folder
removes such leftovers (``leftovers.py``).
"""

from __future__ import annotations

import contextlib
import errno
import os
import tempfile
from collections.abc import Iterator
from typing import BinaryIO

from ..errors import QuantizedFileError
from .leftovers import remove_leftovers, temp_prefix


def open_temp(fd: int) -> BinaryIO:
    """The file object that writers write to (tests wrap it to simulate a full disk)."""
    return os.fdopen(fd, "wb")


def describe_os_error(exc: OSError) -> str:
    """A short, plain description of a write failure (``disk full`` for ENOSPC)."""
    if exc.errno == errno.ENOSPC:
        return "disk full (no space left on device)"
    if exc.errno == getattr(errno, "EDQUOT", None):
        return "disk quota exceeded"
    if exc.errno in (errno.EACCES, errno.EPERM):
        return "permission denied"
    if exc.errno == errno.EROFS:
        return "read-only file system"
    return exc.strerror or str(exc)


def _new_file_mode(path: str) -> int:
    """The mode an ordinary ``open(path, "w")`` would give (mkstemp makes files 0600)."""
    try:
        return os.stat(path).st_mode & 0o7777  # keep an earlier file's permissions
    except OSError:
        pass
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return 0o666 & ~int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    umask = os.umask(0o022)  # no other way to read it; restored at once
    os.umask(umask)
    return 0o666 & ~umask


def _remove_quietly(path: str) -> None:
    with contextlib.suppress(OSError):
        os.remove(path)


def _fsync_folder(folder: str) -> None:
    """Make the rename itself durable (POSIX); a no-op where folders cannot be opened."""
    flags = getattr(os, "O_DIRECTORY", None)
    if flags is None:
        return
    try:
        fd = os.open(folder, os.O_RDONLY | flags)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_error(path: str, exc: OSError) -> QuantizedFileError:
    """The error raised for a failed write of ``path``."""
    return QuantizedFileError(
        f"{path}: cannot write the file: {describe_os_error(exc)}; "
        "nothing was written there (an earlier file at that path is unchanged)"
    )


@contextlib.contextmanager
def atomic_write(path: str) -> Iterator[BinaryIO]:
    """Yield a binary file whose content replaces ``path`` only if the block succeeds.

    OSError (disk full, permission denied, ...) becomes ``QuantizedFileError``;
    KeyboardInterrupt and other errors are re-raised after the clean-up.
    """
    folder = os.path.dirname(os.path.abspath(path))
    remove_leftovers(folder)
    try:
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=temp_prefix(path), suffix=".tmp")
    except OSError as exc:
        raise write_error(path, exc) from exc
    try:
        try:
            f = open_temp(fd)
        except BaseException:
            os.close(fd)
            raise
        with f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, _new_file_mode(path))
        os.replace(tmp, path)
    except OSError as exc:
        _remove_quietly(tmp)
        raise write_error(path, exc) from exc
    except BaseException:
        _remove_quietly(tmp)
        raise
    _fsync_folder(folder)
