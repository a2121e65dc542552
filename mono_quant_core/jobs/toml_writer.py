"""A small TOML writer for job files: strings, integers, floats, booleans, arrays, inline tables.

``tomllib`` only reads; job files need just these value types, so a writer of
a few dozen lines beats a dependency.
"""

from __future__ import annotations

import math
import re
from typing import Any

from ..errors import ConfigError

_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")
_SHORT_ESCAPES = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\t": "\\t", "\n": "\\n", "\f": "\\f", "\r": "\\r"}


def toml_string(text: str, where: str = "value") -> str:
    """A TOML basic string (double quotes) holding exactly ``text``."""
    out = ['"']
    for ch in text:
        code = ord(ch)
        if ch in _SHORT_ESCAPES:
            out.append(_SHORT_ESCAPES[ch])
        elif code < 0x20 or code == 0x7F:
            out.append(f"\\u{code:04X}")
        elif 0xD800 <= code <= 0xDFFF:
            # A lone surrogate: an undecodable file name (surrogateescape); TOML is UTF-8 only.
            raise ConfigError(f"{where}: {text!r} is not valid Unicode and cannot be written to TOML")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def toml_key(key: str, where: str = "key") -> str:
    """``key`` bare when TOML allows it, quoted otherwise."""
    if not isinstance(key, str):
        raise ConfigError(f"{where}: table keys must be strings, got {key!r}")
    return key if _BARE_KEY.fullmatch(key) else toml_string(key, where)


def toml_value(value: Any, where: str = "value") -> str:
    """One TOML value on one line (arrays and inline tables nest)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)  # shortest text that reads back as the same float; always has . or e
    if isinstance(value, str):
        return toml_string(value, where)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_value(v, f"{where}[{i}]") for i, v in enumerate(value)) + "]"
    if isinstance(value, dict):
        if not value:
            return "{}"
        items = (f"{toml_key(k, where)} = {toml_value(v, f'{where}.{k}')}" for k, v in value.items())
        return "{ " + ", ".join(items) + " }"
    kind = "null" if value is None else type(value).__name__
    raise ConfigError(
        f"{where}: a {kind} value cannot be written to a TOML job file "
        "(use strings, numbers, booleans, lists or tables)"
    )
