"""Type checks of the ``mono_quant`` metadata fields, so a damaged field is named, never a bare KeyError.

``format_version`` and ``layers`` are required; the other fields were written
by every mono-quant but are read with defaults, so they are checked only when
present.  Readers ignore fields they do not know (docs/file-format.md).
"""

from __future__ import annotations

from typing import Any

from ..errors import QuantizedFileError
from .content_hash import FIELD as CONTENT_HASH
from .content_hash import check_field as check_content_hash

#: Top-level fields that must be JSON objects when present.
_OBJECTS = ("versions", "config", "calibration", "source", "report")
#: Layer-record fields: the types allowed (None: null allowed).
_LAYER_STRINGS = ("dtype", "mode", "scheme", "granularity")
_LAYER_INTS = ("axis", "group_size")


def _bad(path: str, field: str, problem: str) -> QuantizedFileError:
    return QuantizedFileError(f"{path}: corrupt: metadata field '{field}' {problem}")


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_shape(value: object) -> bool:
    return isinstance(value, list) and all(_is_int(d) and d >= 0 for d in value)


def _check_layer(record: object, i: int, path: str) -> None:
    where = f"layers[{i}]"
    if not isinstance(record, dict):
        raise _bad(path, where, "must be an object")
    for key in ("name", "type"):
        if key not in record:
            raise _bad(path, f"{where}.{key}", "is missing")
        if not isinstance(record[key], str):
            raise _bad(path, f"{where}.{key}", f"must be a string, not {type(record[key]).__name__}")
    for key in _LAYER_STRINGS:
        if record.get(key) is not None and not isinstance(record[key], str):
            raise _bad(path, f"{where}.{key}", "must be a string or null")
    for key in _LAYER_INTS:
        if record.get(key) is not None and not _is_int(record[key]):
            raise _bad(path, f"{where}.{key}", "must be an integer or null")
    if not _is_number(record.get("weight_sqnr_db")):
        raise _bad(path, f"{where}.weight_sqnr_db", "must be a number or null")
    if record.get("shape") is not None and not _is_shape(record["shape"]):
        raise _bad(path, f"{where}.shape", "must be a list of non-negative integers")
    weights = record.get("weights")
    if weights is not None and not (isinstance(weights, dict) and all(_is_shape(s) for s in weights.values())):
        raise _bad(path, f"{where}.weights", "must map weight names to shapes")


def _check_skipped(value: object, path: str) -> None:
    if not isinstance(value, list):
        raise _bad(path, "skipped", "must be a list")
    for i, entry in enumerate(value):
        if not isinstance(entry, dict) or not all(isinstance(entry.get(k), str) for k in ("name", "type", "reason")):
            raise _bad(path, f"skipped[{i}]", "must be an object with string name, type and reason")


def _check_folded(value: object, path: str) -> None:
    if not isinstance(value, list):
        raise _bad(path, "folded_batchnorm", "must be a list")
    for i, entry in enumerate(value):
        if not isinstance(entry, dict) or not all(isinstance(entry.get(k), str) for k in ("name", "type", "into")):
            raise _bad(path, f"folded_batchnorm[{i}]", "must be an object with string name, type and into")


def _is_number(value: object) -> bool:
    """A JSON number, or an infinite/undefined figure written as a string (``"inf"``)."""
    if value is None or (isinstance(value, str) and value in ("inf", "-inf", "nan")):
        return True
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _check_report(report: dict[str, Any], path: str) -> None:
    """The report figures ``inspect`` computes with or formats."""
    for key in ("original_bytes", "quantized_bytes", "compression_ratio", "output_sqnr_db"):
        if not _is_number(report.get(key)):
            raise _bad(path, f"report.{key}", "must be a number or null")
    layers = report.get("layers", [])
    if not isinstance(layers, list) or not all(isinstance(r, dict) for r in layers):
        raise _bad(path, "report.layers", "must be a list of objects")
    for i, row in enumerate(layers):
        if not _is_number(row.get("output_sqnr_db")):
            raise _bad(path, f"report.layers[{i}].output_sqnr_db", "must be a number or null")
    for key in ("warnings", "failures"):
        value = report.get(key, [])
        if not isinstance(value, list) or not all(isinstance(w, str) for w in value):
            raise _bad(path, f"report.{key}", "must be a list of strings")


def check_fields(meta: dict[str, Any], path: str) -> None:
    """Raise ``QuantizedFileError`` naming ``path`` and the first malformed field."""
    version = meta.get("format_version")
    if "format_version" not in meta:
        raise _bad(path, "format_version", "is missing")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise QuantizedFileError(f"{path}: corrupt: format_version {version!r} is not a positive integer")
    for key in _OBJECTS:
        if key in meta and not isinstance(meta[key], dict):
            raise _bad(path, key, f"must be an object, not {type(meta[key]).__name__}")
    if "model_class" in meta and not isinstance(meta["model_class"], str):
        raise _bad(path, "model_class", "must be a string")
    if "layers" not in meta:
        raise _bad(path, "layers", "is missing")
    if not isinstance(meta["layers"], list):
        raise _bad(path, "layers", f"must be a list of layer records, not {type(meta['layers']).__name__}")
    for i, record in enumerate(meta["layers"]):
        _check_layer(record, i, path)
    if "skipped" in meta:
        _check_skipped(meta["skipped"], path)
    aliases = meta.get("aliases", {})
    if not isinstance(aliases, dict) or not all(isinstance(v, str) for v in aliases.values()):
        raise _bad(path, "aliases", "must map tensor names to tensor names")
    source = meta.get("source") or {}
    for key in ("script", "entry", "checkpoint", "checkpoint_sha256"):
        if source.get(key) is not None and not isinstance(source[key], str):
            raise _bad(path, f"source.{key}", "must be a string or null")
    if source.get("entry_kwargs") is not None and not isinstance(source["entry_kwargs"], dict):
        raise _bad(path, "source.entry_kwargs", "must be an object")
    calibration = meta.get("calibration") or {}
    for key in ("method", "files_sha256"):
        if calibration.get(key) is not None and not isinstance(calibration[key], str):
            raise _bad(path, f"calibration.{key}", "must be a string or null")
    if "folded_batchnorm" in meta:
        _check_folded(meta["folded_batchnorm"], path)
    if "report" in meta:
        _check_report(meta["report"], path)
    if CONTENT_HASH in meta:
        check_content_hash(meta[CONTENT_HASH], path)
