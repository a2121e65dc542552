"""Peak resident memory of the current process (Linux), resettable."""

from __future__ import annotations

import os


def _status(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


def rss() -> int:
    return _status("VmRSS")


def peak() -> int:
    return _status("VmHWM")


def reset_peak() -> None:
    """Set the peak (VmHWM) back to the current RSS (Linux >= 4.0)."""
    with open(f"/proc/{os.getpid()}/clear_refs", "w") as f:
        f.write("5")
