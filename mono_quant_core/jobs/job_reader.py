"""Reading job files: TOML -> checked :class:`Job`, with errors naming file, section and key."""

from __future__ import annotations

import datetime
import os
import tomllib
from typing import Any

from .. import config as config_module
from ..config import QuantConfig
from ..errors import ConfigError
from .job import Job
from .schema import (
    JOB_FIELDS,
    SECTIONS,
    config_error_in_job,
    config_field,
    failing_override,
    is_config_key,
    job_error,
)
from .toml_writer import toml_key

_CHOICES = {
    "dtype": config_module.DTYPES,
    "mode": config_module.MODES,
    "scheme": config_module.SCHEMES,
    "granularity": config_module.GRANULARITIES,
    "observer": config_module.OBSERVERS,
    "histogram_method": config_module.HISTOGRAM_METHODS,
    "on_failure": config_module.ON_FAILURE,
    "fallback": config_module.FALLBACKS,
    "algorithm": config_module.ALGORITHMS,
}
_EXPECTED = {
    "path": "a string (a file or folder path)",
    "string": "a string",
    "integer": "an integer",
    "float": "a number",
    "boolean": "true or false",
    "names": "a list of strings",
    "table": "an inline table of keyword arguments",
    "overrides": 'a table of "pattern" = { field = value }',
}


def load_job(path: str | os.PathLike) -> Job:
    """Read the job file at ``path``; relative paths in it are relative to its folder."""
    path = os.fspath(path)
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such job file") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a UTF-8 text file, so not a TOML job file") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the job file: {exc.strerror or exc}") from None
    return parse_job(text, os.path.dirname(os.path.abspath(path)), path)


def parse_job(text: str, base_dir: str | os.PathLike | None = None, name: str = "job") -> Job:
    """Parse job-file text; ``name`` starts every error message."""
    base = os.path.abspath(base_dir if base_dir is not None else os.getcwd())
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{name}: not valid TOML: {exc}") from None
    try:
        return _build(data, base)
    except ConfigError as exc:
        raise exc.located(name) from None


def _build(data: dict[str, Any], base: str) -> Job:
    values: dict[tuple[str, str], Any] = {}
    sections = ", ".join(f"[{s}]" for s in SECTIONS)
    for section, table in data.items():
        if not isinstance(table, dict):
            raise ConfigError(f"{section}: keys belong inside a section ({sections}), not at the top of the file")
        if section not in SECTIONS:
            raise ConfigError(f"[{section}]: unknown section; a job file has the sections {sections}")
        spelled: dict[str, str] = {}
        for raw_key, value in table.items():
            key = raw_key.replace("-", "_")
            if key not in SECTIONS[section]:
                raise job_error(section, raw_key, f"unknown key; [{section}] takes {', '.join(SECTIONS[section])}")
            if key in spelled:
                raise job_error(section, key, f"given twice (as {spelled[key]} and {raw_key})")
            spelled[key] = raw_key
            values[section, key] = _checked(section, key, value, base)

    settings = {config_field(key): v for (section, key), v in values.items() if is_config_key(section, key)}
    try:
        config = QuantConfig(**settings)
    except ConfigError as exc:
        culprit = failing_override(settings, settings.get("layer_overrides") or {})
        if culprit is not None and culprit[1].problem is not None:
            raise job_error("quantization.overrides", toml_key(culprit[0]), culprit[1].problem) from None
        raise config_error_in_job(exc) from None
    fields = {name: values[sk] for sk, name in JOB_FIELDS.items() if sk in values}
    fields.setdefault("script", "")
    fields.setdefault("output", "")
    return Job(config=config, **fields)


def _checked(section: str, key: str, value: Any, base: str) -> Any:
    kind = SECTIONS[section][key]
    if kind == "names" and isinstance(value, str):
        value = [value]
    ok = {
        "path": isinstance(value, str),
        "string": isinstance(value, str),
        "choice": isinstance(value, str),
        "integer": isinstance(value, int) and not isinstance(value, bool),
        "float": isinstance(value, (int, float)) and not isinstance(value, bool),
        "boolean": isinstance(value, bool),
        "names": isinstance(value, list) and all(isinstance(v, str) for v in value),
        "table": isinstance(value, dict),
        "overrides": isinstance(value, dict),
    }[kind]
    if not ok:
        expected = _EXPECTED.get(kind) or f"one of {', '.join(_CHOICES[key])}"
        raise job_error(section, key, f"must be {expected}, got {_toml_type(value)} {value!r}")
    if kind == "path":
        if not value.strip():
            raise job_error(section, key, "is empty; leave the key out instead")
        return os.path.normpath(os.path.join(base, os.path.expanduser(value)))
    if kind == "float":
        return float(value)
    if kind == "table":
        _refuse_dates(value, f"{key}")
    if kind == "overrides":
        return {pattern: _override(section, key, pattern, fields) for pattern, fields in value.items()}
    return value


def _override(section: str, key: str, pattern: str, fields: Any) -> dict[str, Any]:
    """One ``"pattern" = { field = value }`` of ``[quantization.overrides]``: dashed fields and choice
    spellings made canonical; the values themselves QuantConfig checks."""
    where, spot = f"{section}.{key}", toml_key(pattern)
    allowed = ", ".join(config_module.OVERRIDE_FIELDS)
    if not isinstance(fields, dict) or not fields:
        raise job_error(where, spot, f'must be an inline table of {allowed}, e.g. {{ dtype = "int8" }}')
    out: dict[str, Any] = {}
    for raw, value in fields.items():
        name = raw.replace("-", "_")
        if name not in config_module.OVERRIDE_FIELDS:
            raise job_error(where, spot, f"{raw!r} cannot be set per layer; use {allowed}")
        integer = name == "group_size"
        if integer and (isinstance(value, bool) or not isinstance(value, int)):
            raise job_error(where, spot, f"group_size must be an integer, got {_toml_type(value)} {value!r}")
        if not integer and not isinstance(value, str):
            raise job_error(where, spot, f"{name} must be a string, got {_toml_type(value)} {value!r}")
        out[name] = value if integer else config_module.canonical_choice(value)
    return out


def _refuse_dates(value: Any, where: str) -> None:
    """Entry arguments are JSON-like; TOML dates and times have no JSON or CLI spelling."""
    if isinstance(value, (datetime.date, datetime.time)):
        raise ConfigError(f"[model] {where}: dates and times are not supported here; write the value as a string")
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for k, v in items:
        _refuse_dates(v, f"{where}.{k}" if isinstance(value, dict) else f"{where}[{k}]")


def _toml_type(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (datetime.date, datetime.time)):
        return "date/time"
    return {str: "string", int: "integer", float: "float", list: "array", dict: "table"}.get(
        type(value), type(value).__name__
    )
