"""Byte sizes written by people: ``5GB``, ``512MiB``, ``1500000`` (torch-free, for job files and flags)."""

from __future__ import annotations

import re

from .errors import ConfigError

#: Decimal units as Hugging Face's ``max_shard_size`` counts them, binary ones with an ``i``.
UNITS = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12}
UNITS |= {"KIB": 1 << 10, "MIB": 1 << 20, "GIB": 1 << 30, "TIB": 1 << 40}
_SIZE = re.compile(r"\s*([0-9]+(?:\.[0-9]*)?)\s*([A-Za-z]*)\s*")


def _error(what: str, problem: str) -> ConfigError:
    return ConfigError(f"{what}: {problem}", key=what, problem=problem)


def parse_size(value: int | str | None, what: str = "max_shard_bytes") -> int | None:
    """Bytes from ``5_000_000``, ``"5GB"`` (10**9 bytes), ``"512MiB"`` (2**29); None stays None.

    ``what`` names the setting in the ConfigError raised for anything else.
    """
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise _error(what, f"{value!r} is not a size")
    if isinstance(value, int):
        n = value
    else:
        m = _SIZE.fullmatch(value)
        unit = m[2].upper() if m else ""
        if m is None or unit not in UNITS:
            raise _error(what, f"{value!r} is not a size; give bytes or a number with a unit (500MB, 5GB, 2GiB)")
        n = int(float(m[1]) * UNITS[unit])
    if n < 1:
        raise _error(what, f"{value!r} must be at least one byte")
    return n
