"""How numbers read in the window: sizes, counts, shares, durations."""

from __future__ import annotations

from mono_quant_core.report import human_bytes as format_bytes  # one way to show sizes, app and CLI

__all__ = ["format_bytes", "format_count", "format_duration", "format_share"]


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


def format_share(share: float) -> str:
    """``87.5 %`` of a share in [0, 1]; ``100 %`` and ``0 %`` only when exact (99.97 % reads
    ``99.9 %``, not a misleading ``100.0 %``)."""
    if share >= 1:
        return "100 %"
    if share <= 0:
        return "0 %"
    return f"{min(max(100 * share, 0.1), 99.9):.1f} %"
