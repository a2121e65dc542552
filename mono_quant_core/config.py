"""QuantConfig: one set of names and values shared by the API, the CLI, job files and the GUI.

Torch-free so the application can build its settings panel before torch loads.  The rules the
application asks before then live here too, once: spellings, "is a cast", "needs calibration",
layer name patterns (``selection`` applies them) and checkpoint suffixes (``loading`` reads by them).
"""

from __future__ import annotations

import dataclasses
import fnmatch
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .errors import ConfigError

DTYPES = ("int8", "int4", "fp16", "bf16")
#: The dtypes that are a plain cast: no scale, zero point or calibration.
CAST_DTYPES = ("fp16", "bf16")
MODES = ("weight-only", "dynamic", "static")
SCHEMES = ("symmetric", "asymmetric")
GRANULARITIES = ("per-channel", "per-tensor", "per-group")
OBSERVERS = ("minmax", "moving-average", "percentile", "histogram")
HISTOGRAM_METHODS = ("mse", "entropy")
ON_FAILURE = ("error", "warn", "ignore")

#: Layer types that have a quantized replacement (class names of ``torch.nn``).
SUPPORTED_TYPES = ("Linear", "Conv1d", "Conv2d", "Conv3d", "Embedding", "LSTM", "GRU")

_CHOICES = {
    "dtype": DTYPES,
    "mode": MODES,
    "scheme": SCHEMES,
    "granularity": GRANULARITIES,
    "observer": OBSERVERS,
    "histogram_method": HISTOGRAM_METHODS,
    "on_failure": ON_FAILURE,
}


def _invalid(key: str, problem: str, rule: str | None = None) -> ConfigError:
    """The ConfigError ``key: problem`` with both kept as fields; ``rule`` (default: the problem)
    is what was broken, said without the value given."""
    return ConfigError(f"{key}: {problem}", key=key, problem=problem, rule=rule or problem)


def canonical_choice(value: Any) -> Any:
    """The spelling QuantConfig keeps for a choice: underscores (``per_channel``) and any case accepted."""
    if isinstance(value, str):
        return value.strip().lower().replace("_", "-")
    return value


def is_cast_dtype(dtype: str) -> bool:
    """Whether ``dtype`` is a plain cast (fp16, bf16), in any spelling."""
    return canonical_choice(dtype) in CAST_DTYPES


def needs_calibration(dtype: str, mode: str) -> bool:
    """Whether a run with ``dtype`` and ``mode`` needs calibration data: static mode, unless a cast."""
    return canonical_choice(mode) == "static" and not is_cast_dtype(dtype)


# -- layer name patterns (QuantConfig.include / exclude) -----------------------------------------
def name_matcher(pattern: str) -> Callable[[str], bool]:
    """A test of qualified module names: ``pattern`` is a glob (``encoder.*.fc1``) or, after ``re:``,
    a regular expression on the whole name; a match on a container covers everything inside it
    (``head`` matches ``head.fc``).  Raises ConfigError for a bad regular expression."""
    if pattern.startswith("re:"):
        try:
            rx = re.compile(pattern[3:])
        except re.error as exc:
            raise ConfigError(f"pattern {pattern!r}: not a valid regular expression ({exc})") from None

        def test(name: str) -> bool:
            return rx.fullmatch(name) is not None
    else:

        def test(name: str) -> bool:
            return fnmatch.fnmatchcase(name, pattern)

    def match(name: str) -> bool:
        parts = name.split(".")
        return any(test(".".join(parts[: i + 1])) for i in range(len(parts)))

    return match


# -- checkpoint files (what load_model reads, by how the name ends, in any case) ------------------
TORCH_CHECKPOINT_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt")
SAFETENSORS_SUFFIX = ".safetensors"
SAFETENSORS_INDEX_SUFFIX = ".safetensors.index.json"
CHECKPOINT_SUFFIXES = (*TORCH_CHECKPOINT_SUFFIXES, SAFETENSORS_SUFFIX, SAFETENSORS_INDEX_SUFFIX)


def checkpoint_suffix(name: str) -> str | None:
    """The checkpoint suffix a file name ends with (the longest, as spelled in CHECKPOINT_SUFFIXES);
    None when it is no checkpoint."""
    lower = name.lower()
    for suffix in sorted(CHECKPOINT_SUFFIXES, key=len, reverse=True):
        if lower.endswith(suffix):
            return suffix
    return None


@dataclass
class QuantConfig:
    """What to quantize and how.  Field names and values match DESIGN.md §5.

    ``layers``: when not None, exactly these qualified module names are
    quantized (the GUI's ticked boxes); type and pattern rules then only
    explain why the others were skipped.
    """

    dtype: str = "int8"
    mode: str = "dynamic"
    scheme: str = "symmetric"
    granularity: str = "per-channel"
    group_size: int = 128
    observer: str = "minmax"
    include_types: list[str] | None = None
    exclude_types: list[str] = field(default_factory=list)
    include: list[str] = field(default_factory=list)
    exclude: list[str] = field(default_factory=list)
    layers: list[str] | None = None
    on_failure: str = "error"
    min_output_sqnr_db: float | None = None
    # Observer knobs.
    percentile: float = 99.99
    moving_average_constant: float = 0.01
    histogram_bins: int = 2048
    histogram_method: str = "mse"
    # Layers below this weight or output SQNR get a warning in the report.
    warn_layer_sqnr_db: float = 20.0

    def __post_init__(self) -> None:
        for name in _CHOICES:
            setattr(self, name, canonical_choice(getattr(self, name)))
        for name in ("include_types", "exclude_types", "include", "exclude", "layers"):
            value = getattr(self, name)
            if isinstance(value, str):
                setattr(self, name, [value])
            elif value is not None:
                setattr(self, name, list(value))
        self.validate()

    # -- checks -----------------------------------------------------------------
    def validate(self) -> None:
        for name, allowed in _CHOICES.items():
            value = getattr(self, name)
            if value not in allowed:
                raise _invalid(name, f"{value!r} is not allowed; choose one of {', '.join(allowed)}")
        if not isinstance(self.group_size, int) or self.group_size < 2 or self.group_size % 2:
            raise _invalid("group_size", f"{self.group_size!r} must be an even integer >= 2")
        if self.granularity == "per-group" and self.dtype not in ("int8", "int4"):
            raise _invalid("granularity", "per-group applies to int8 and int4 only")
        if self.dtype == "int4" and self.mode != "weight-only":
            raise _invalid(
                "mode", f"int4 is weight-only (got mode={self.mode!r}); set mode to weight-only", "int4 is weight-only"
            )
        if self.dtype in ("int8", "int4") and self.mode == "dynamic" and self.granularity == "per-group":
            raise _invalid("granularity", "per-group needs mode weight-only")
        if self.mode == "static" and self.granularity == "per-group":
            raise _invalid("granularity", "per-group needs mode weight-only")
        if not 0.0 < float(self.percentile) <= 100.0:
            raise _invalid("percentile", f"{self.percentile!r} must be in (0, 100]")
        if not 0.0 < float(self.moving_average_constant) <= 1.0:
            raise _invalid("moving_average_constant", f"{self.moving_average_constant!r} must be in (0, 1]")
        if int(self.histogram_bins) < 16:
            raise _invalid("histogram_bins", f"{self.histogram_bins!r} must be >= 16")
        for name in ("include_types", "exclude_types"):
            for t in getattr(self, name) or []:
                if not isinstance(t, str) or not t:
                    raise _invalid(name, f"{t!r} is not a layer type name")

    @property
    def is_cast(self) -> bool:
        return is_cast_dtype(self.dtype)

    @property
    def needs_calibration(self) -> bool:
        return needs_calibration(self.dtype, self.mode)

    # -- conversion ---------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> QuantConfig:
        """Build from a mapping with dashed or underscored keys; unknown keys are an error."""
        known = {f.name for f in dataclasses.fields(cls)}
        kwargs: dict[str, Any] = {}
        for key, value in data.items():
            name = key.replace("-", "_")
            if name not in known:
                raise _invalid(key, f"unknown setting; known: {', '.join(sorted(known))}")
            kwargs[name] = value
        return cls(**kwargs)

    def replace(self, **changes: Any) -> QuantConfig:
        return dataclasses.replace(self, **changes)
