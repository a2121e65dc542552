"""Temporary-file names of atomic writes, and the removal of those a killed save left behind.

A save writes ``.<name>.mq-<host>-<pid>-<random>.tmp`` next to its target
(``<host>``: 8 hex digits of the SHA-256 of the machine's host name).  A save
killed with ``kill -9`` leaves that file behind; the next save into the folder
removes it when its process no longer exists on this machine.  Files of
another machine (a shared network folder), of a live process, and those of
older mono-quant versions (``.<name>.<random>.tmp``, no pid) are removed only
when nothing has written to them for a day, so a concurrent save's file is
never touched.  Only names of exactly this pattern, for a ``.safetensors``,
``.pt``, ``.pth`` or ``.safetensors.index.json`` target, are considered.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import socket
import time

#: A temporary file nobody has written to for this long is stale whatever its pid.
STALE_S = 24 * 3600
_TARGET = r"\.(?P<target>.+\.(?i:safetensors|pt|pth|safetensors\.index\.json))"
_RANDOM = r"[a-z0-9_]{8}"  # tempfile.mkstemp's random part
OWN = re.compile(rf"{_TARGET}\.mq-(?P<host>[0-9a-f]{{8}})-(?P<pid>[0-9]{{1,10}})-{_RANDOM}\.tmp")
OLD = re.compile(rf"{_TARGET}\.{_RANDOM}\.tmp")


def host_id() -> str:
    """8 hex digits naming this machine (a pid means something only on its own machine)."""
    return hashlib.sha256(socket.gethostname().encode("utf-8", "surrogateescape")).hexdigest()[:8]


def temp_prefix(path: str) -> str:
    """The ``mkstemp`` prefix of a temporary file for ``path``: ``.<name>.mq-<host>-<pid>-``."""
    return f".{os.path.basename(path)}.mq-{host_id()}-{os.getpid()}-"


def process_exists(pid: int) -> bool:
    """True unless ``pid`` certainly names no process on this machine (unknown counts as alive)."""
    if pid <= 0 or os.name == "nt":  # Windows' os.kill(pid, 0) sends a Ctrl-C event: never used there
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (OSError, OverflowError):  # PermissionError: another user's process
        return True
    return True


def is_leftover(name: str, mtime: float, now: float, host: str) -> bool:
    """Whether the file ``name`` (last written at ``mtime``) is a dead save's temporary file."""
    own = OWN.fullmatch(name)
    if own is None:
        return OLD.fullmatch(name) is not None and now - mtime > STALE_S
    pid = int(own["pid"])
    if own["host"] == host and pid == os.getpid():
        return False  # this process's own writes (another thread may be saving now)
    if own["host"] == host and not process_exists(pid):
        return True
    return now - mtime > STALE_S


def remove_leftovers(folder: str) -> list[str]:
    """Remove dead saves' temporary files from ``folder``; returns their names. Never raises."""
    removed: list[str] = []
    host, now = host_id(), time.time()
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    for entry in entries:
        if not entry.name.endswith(".tmp") or not entry.name.startswith("."):
            continue
        with contextlib.suppress(OSError):
            if entry.is_file(follow_symlinks=False) and is_leftover(
                entry.name, entry.stat(follow_symlinks=False).st_mtime, now, host
            ):
                os.remove(entry.path)
                removed.append(entry.name)
    return removed
