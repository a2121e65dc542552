"""How numbers read in the window: sizes, counts, durations."""

from __future__ import annotations


def format_bytes(n: int | float | None) -> str:
    """``512 B``, ``48.0 KiB``, ``3.25 MiB``, ``1.50 GiB``."""
    if n is None:
        return "—"
    n = float(n)
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if abs(n) >= size:
            value = n / size
            return f"{value:.2f} {unit}" if value < 10 else f"{value:.1f} {unit}"
    return f"{int(n)} B"


def format_count(n: int) -> str:
    """``950``, ``12.5 k``, ``3.20 M``, ``1.10 B`` (parameter counts)."""
    for unit, size in (("B", 10**9), ("M", 10**6), ("k", 10**3)):
        if abs(n) >= size:
            value = n / size
            return f"{value:.2f} {unit}" if value < 10 else f"{value:.1f} {unit}"
    return str(n)


def format_duration(seconds: float) -> str:
    """``7 s``, ``2 min 05 s``, ``1 h 03 min``."""
    seconds = max(0, int(round(seconds)))
    if seconds < 60:
        return f"{seconds} s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {seconds:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"
