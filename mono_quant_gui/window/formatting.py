"""How numbers read in the window: sizes, counts, durations."""

from __future__ import annotations

from mono_quant_core.report import human_bytes as format_bytes  # one way to show sizes, app and CLI

__all__ = ["format_bytes", "format_count", "format_duration"]


def format_count(n: int) -> str:
    """``950``, ``12.5 k``, ``3.20 M``, ``1.10 B`` (parameter counts)."""
    for unit, size in (("B", 10**9), ("M", 10**6), ("k", 10**3)):
        if abs(n) >= size:
            value = n / size
            return f"{value:.2f} {unit}" if value < 10 else f"{value:.1f} {unit}"
    return str(n)


def format_duration(seconds: float) -> str:
    """``7 s``, ``2 min 05 s``, ``1 h 03 min``."""
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {seconds:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"
