"""The ``mono_quant`` metadata entry: one JSON string describing a quantized file.

See docs/file-format.md for every field.  The JSON is ASCII, compact, and has
no NaN/Infinity literals (``inf`` is written as the string ``"inf"``, as in
the report), so any JSON reader can parse it.
"""

from __future__ import annotations

import json
import os
import platform
from typing import Any

from ..errors import QuantizedFileError
from ..report import _encode
from .metadata_fields import check_fields

#: The layout this code writes; files with a larger number are refused.
FORMAT_VERSION = 1
#: Name of the metadata entry (safetensors ``__metadata__`` key, ``.pt`` dict key).
METADATA_KEY = "mono_quant"
#: What the file records about where the model came from (never absolute paths).
SOURCE_KEYS = ("script", "entry", "entry_kwargs", "checkpoint", "checkpoint_sha256")
#: Keys a layer record adds to the module's ``quant_meta()``.
LAYER_EXTRA_KEYS = ("name", "weight_sqnr_db")


def versions() -> dict[str, str]:
    """Versions of the software writing the file."""
    import safetensors
    import torch

    from .. import __version__

    return {
        "mono_quant": __version__,
        "torch": torch.__version__.split("+")[0],
        "safetensors": getattr(safetensors, "__version__", "unknown"),
        "python": platform.python_version(),
    }


def source_record(source: dict[str, Any] | None) -> dict[str, Any]:
    """The portable part of ``QuantResult.source``: file names only, no absolute paths."""
    source = source or {}
    if source.get("checkpoint_sha256_pending") and source.get("checkpoint_path"):
        from ..loading.checkpoint_files import checkpoint_sha256

        # Computed once, the first time a file records it (open_model(lazy=...) defers it).
        source["checkpoint_sha256"] = checkpoint_sha256(source["checkpoint_path"])
        source.pop("checkpoint_sha256_pending")
    record: dict[str, Any] = {key: source.get(key) for key in SOURCE_KEYS}
    for key in ("script", "checkpoint"):
        if record[key]:
            record[key] = os.path.basename(os.fspath(record[key]))
    if record["entry_kwargs"] is None:
        record["entry_kwargs"] = {}
    return record


def layer_record(name: str, quant_meta: dict[str, Any], weight_sqnr_db: float | None) -> dict[str, Any]:
    """One entry of ``layers``: the module's ``quant_meta()`` plus its name and weight SQNR."""
    return {"name": name, **quant_meta, "weight_sqnr_db": weight_sqnr_db}


def quant_meta_of(record: dict[str, Any]) -> dict[str, Any]:
    """Back from a layer record to what ``from_meta`` expects."""
    return {k: v for k, v in record.items() if k not in LAYER_EXTRA_KEYS}


def dumps(meta: dict[str, Any]) -> str:
    """Compact ASCII JSON with ``inf`` as a string."""
    return json.dumps(_encode(meta), separators=(",", ":"), ensure_ascii=True, allow_nan=False, default=str)


def parse(text: str, path: str) -> dict[str, Any]:
    """Parse and check a metadata string read from ``path``."""
    try:
        meta = json.loads(text)
    except json.JSONDecodeError as exc:
        raise QuantizedFileError(f"{path}: corrupt: the '{METADATA_KEY}' metadata is not valid JSON ({exc})") from exc
    if not isinstance(meta, dict):
        raise QuantizedFileError(f"{path}: corrupt: the '{METADATA_KEY}' metadata is not a JSON object")
    version = meta.get("format_version")
    if isinstance(version, int) and not isinstance(version, bool) and version > FORMAT_VERSION:
        versions = meta.get("versions")
        made_by = (versions if isinstance(versions, dict) else {}).get("mono_quant", "a newer version")
        raise QuantizedFileError(
            f"{path}: written in file format {version} by mono-quant {made_by}; this mono-quant reads "
            f"format {FORMAT_VERSION} and older: upgrade mono-quant to load it"
        )
    check_fields(meta, path)
    meta.setdefault("aliases", {})
    return meta
