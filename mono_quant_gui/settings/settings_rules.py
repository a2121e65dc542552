"""Which settings may be combined: the panel asks QuantConfig itself, so the GUI never disagrees with the engine.

Fields are decided in ``ORDER``: an option of one field is offered when a
config built from the fields before it plus that option validates; the fields
after it are then moved to an allowed value.
"""

from __future__ import annotations

from typing import Any

from mono_quant_core.config import (
    DTYPES,
    FALLBACKS,
    GRANULARITIES,
    MODES,
    OBSERVERS,
    ON_FAILURE,
    SCHEMES,
    QuantConfig,
    is_cast_dtype,
    needs_calibration,
)
from mono_quant_core.errors import ConfigError

CHOICES: dict[str, tuple[str, ...]] = {
    "dtype": DTYPES,
    "mode": MODES,
    "scheme": SCHEMES,
    "granularity": GRANULARITIES,
    "observer": OBSERVERS,
    "on_failure": ON_FAILURE,
}
ORDER = ("dtype", "mode", "scheme", "granularity")
#: Values of the later fields while an earlier one is being judged: ones every dtype and mode accept.
_NEUTRAL = {"mode": "weight-only", "scheme": "symmetric", "granularity": "per-channel"}
DEFAULTS: dict[str, Any] = {
    name: getattr(QuantConfig(), name)
    for name in ("dtype", "mode", "scheme", "granularity", "group_size", "observer", "on_failure")
}
DEFAULTS.update(samples=0, min_output_sqnr_db=None)
DEFAULTS.update(target_output_sqnr_db=None, target_metric_drop=None, fallback=QuantConfig().fallback)

NEEDS_FOLDER = "Static mode is available once a calibration folder is chosen (Ctrl+L, or drop one on the window)"


def option_problem(values: dict[str, Any], field: str, option: str, has_calibration: bool) -> str | None:
    """Why ``option`` cannot be chosen for ``field`` given the earlier fields (None: it can);
    what the engine refuses comes first, the missing calibration folder after."""
    trial: dict[str, Any] = dict(_NEUTRAL)
    for name in ORDER[: ORDER.index(field)]:
        trial[name] = values[name]
    trial[field] = option
    try:
        QuantConfig(**trial)
    except ConfigError as exc:
        return reason_for_option(exc)
    if field == "mode" and not has_calibration and needs_calibration(values["dtype"], option):
        return NEEDS_FOLDER
    return None


def reason_for_option(exc: ConfigError) -> str:
    """The engine's reason, said of an option the user has not chosen: the rule it broke
    (``int4 is weight-only``), not the message about a value the panel never took."""
    return exc.rule or exc.problem or str(exc)


def fallback_problems(dtype: str) -> dict[str, str]:
    """The fallbacks the engine refuses for ``dtype`` (one not wider than it), each with its rule."""
    problems = {}
    for option in FALLBACKS:
        try:
            QuantConfig(dtype=dtype, mode=_NEUTRAL["mode"], fallback=option)
        except ConfigError as exc:
            problems[option] = reason_for_option(exc)
    return problems


def settle(values: dict[str, Any], has_calibration: bool) -> tuple[dict[str, Any], dict[str, dict[str, str]]]:
    """Move each ordered field to an allowed value; returns the values and, per field, the refused options."""
    values = dict(values)
    refused: dict[str, dict[str, str]] = {}
    for field in ORDER[1:]:
        problems = {}
        for option in CHOICES[field]:
            problem = option_problem(values, field, option, has_calibration)
            if problem is not None:
                problems[option] = problem
        refused[field] = problems
        if values[field] in problems:
            allowed = [o for o in CHOICES[field] if o not in problems]
            values[field] = DEFAULTS[field] if DEFAULTS[field] in allowed else allowed[0]
    return values, refused


def applicable(values: dict[str, Any]) -> dict[str, str | None]:
    """Fields that do not apply to the current choice, each with the reason (None: it applies)."""
    cast = is_cast_dtype(values["dtype"])
    why_cast = f"{values['dtype']} is a plain cast: no scale, zero point or calibration"
    return {
        "mode": why_cast if cast else None,
        "scheme": why_cast if cast else None,
        "granularity": why_cast if cast else None,
        "group_size": why_cast
        if cast
        else (None if values["granularity"] == "per-group" else "only per-group granularity uses a group size"),
        "observer": why_cast
        if cast
        else (
            None
            if needs_calibration(values["dtype"], values["mode"])
            else "observers set activation ranges in static mode only"
        ),
    }


def missing_calibration(values: dict[str, Any], has_calibration: bool) -> str | None:
    """:data:`NEEDS_FOLDER` when these settings need calibration data (the engine's rule) and no
    folder is chosen; None otherwise."""
    return NEEDS_FOLDER if not has_calibration and needs_calibration(values["dtype"], values["mode"]) else None


def build_config(values: dict[str, Any], layers: list[str] | None, base: QuantConfig | None = None) -> QuantConfig:
    """``base`` (default: QuantConfig()) with the panel's values and the ticked layers; every
    field without a widget passes through unchanged.  Raises ConfigError."""
    fields = {k: v for k, v in values.items() if k != "samples"}
    return (base or QuantConfig()).replace(**fields, layers=layers)
