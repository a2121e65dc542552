"""The run report: plain dataclasses that serialise to JSON (DESIGN.md §5).

SQNR values may be ``inf`` (identical tensors) or None (not measured).  JSON
has no infinity, so ``inf`` is written as the string ``"inf"`` and read back
as ``float("inf")``; :func:`format_db` renders either for people.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from typing import Any


def format_db(value: float | None, digits: int = 1) -> str:
    """``42.3 dB``, ``∞ dB`` (identical) or ``—`` (not measured)."""
    if value is None:
        return "—"
    if math.isinf(value):
        return "∞ dB" if value > 0 else "-∞ dB"
    return f"{value:.{digits}f} dB"


def human_bytes(n: int | float | None) -> str:
    """``512 B``, ``48.0 KiB``, ``3.25 MiB``, ``1.50 GiB`` (binary units, as PyTorch users count
    tensor memory) or ``—``.  The application and the command line both show sizes this way."""
    if n is None:
        return "—"
    n = float(n)
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if abs(n) >= size:
            value = n / size
            return f"{value:.2f} {unit}" if value < 10 else f"{value:.1f} {unit}"
    return f"{int(n)} B"


def _encode(value: Any) -> Any:
    if isinstance(value, float):
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        if math.isnan(value):
            return "nan"
        return value
    if isinstance(value, dict):
        return {k: _encode(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_encode(v) for v in value]
    return value


def _decode_float(value: Any) -> Any:
    if isinstance(value, str) and value in ("inf", "-inf", "nan"):
        return float(value)
    return value


@dataclass
class LayerReport:
    """One quantized layer."""

    name: str
    type: str
    dtype: str
    scheme: str | None = None
    granularity: str | None = None
    mode: str | None = None
    group_size: int | None = None
    shape: list[int] = field(default_factory=list)
    weight_sqnr_db: float | None = None
    output_sqnr_db: float | None = None
    original_bytes: int = 0
    quantized_bytes: int = 0
    kernel: str | None = None
    status: str = "ok"  # ok | low-sqnr
    #: How its weights were rounded: ``rtn``, ``gptq`` or ``hqq``.
    algorithm: str = "rtn"
    #: SmoothQuant: None (not smoothed), ``"folded into <name>"`` or ``"input scale"`` (stored in the layer).
    smoothquant: str | None = None
    #: Whether bias correction changed its bias.
    bias_corrected: bool = False

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> LayerReport:
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: _decode_float(v) for k, v in d.items() if k in known})


@dataclass
class SkippedLayer:
    """A layer left in float, with the reason."""

    name: str
    type: str
    reason: str

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SkippedLayer:
        return cls(name=d["name"], type=d["type"], reason=d["reason"])


@dataclass
class QuantReport:
    """Everything a run measured.  ``passed`` is False when a check failed."""

    dtype: str = "int8"
    mode: str = "dynamic"
    output_sqnr_db: float | None = None
    original_bytes: int = 0
    quantized_bytes: int = 0
    file_bytes: int | None = None
    estimated_file_bytes: int | None = None
    compression_ratio: float | None = None
    layers: list[LayerReport] = field(default_factory=list)
    skipped: list[SkippedLayer] = field(default_factory=list)
    calibration_samples: int = 0
    validation_samples: int = 0
    #: Samples set aside for validation but not run, past ``QuantConfig.validation_samples``.
    validation_samples_skipped: int = 0
    #: Validation samples the save → load → run round trip also ran on (at most 2).
    round_trip_samples: int = 0
    calibration_method: str | None = None
    #: calibration files left out because they cannot be used: ``{"file", "reason"}`` each
    calibration_skipped: list[dict[str, str]] = field(default_factory=list)
    load_test_passed: bool | None = None
    weight_range_valid: bool | None = None
    passed: bool = True
    failures: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    versions: dict[str, str] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)
    elapsed_s: float = 0.0
    #: The task metric: ``{name: {"float": x, "quantized": y, "delta": y - x, "higher_is_better": bool}}``.
    metrics: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: Layers the automatic fallback kept float or widened: ``{"name", "from", "to", "reason"}`` each.
    kept_for_accuracy: list[dict[str, Any]] = field(default_factory=list)
    #: The automatic fallback's target and what it reached (None without a target):
    #: ``{"output_sqnr_db", "metric_drop", "fallback", "reached", "achieved_output_sqnr_db",
    #: "achieved_metric_drop", "evaluations"}``.
    accuracy_target: dict[str, Any] | None = None
    #: Per-layer sensitivity the fallback ranked by (most sensitive first), as SensitivityReport.to_dict()["layers"].
    sensitivity: list[dict[str, Any]] = field(default_factory=list)
    #: The run's algorithm and its options not at their default (QuantConfig.algorithm_settings()).
    algorithm: dict[str, Any] = field(default_factory=lambda: {"algorithm": "rtn"})
    #: The device the run computed on (``cpu``, ``cuda:0``; QuantConfig.device resolved).
    device: str | None = None
    #: Weight coverage: ``{"quantized_weight_bytes", "float_weight_bytes", "share", "float": [{"name",
    #: "type", "bytes", "reason"}]}`` (weight bytes of the float model; see mono_quant_core.coverage).
    coverage: dict[str, Any] = field(default_factory=dict)
    #: BatchNorms folded into the convolution before them (``fold_batchnorm``): ``{"name", "type", "into"}`` each.
    folded_batchnorm: list[dict[str, str]] = field(default_factory=list)

    def layer(self, name: str) -> LayerReport:
        for layer in self.layers:
            if layer.name == name:
                return layer
        raise KeyError(name)

    def to_dict(self) -> dict[str, Any]:
        return _encode(dataclasses.asdict(self))

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent, allow_nan=False)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> QuantReport:
        known = {f.name for f in dataclasses.fields(cls)}
        kwargs = {k: _decode_float(v) for k, v in d.items() if k in known}
        kwargs["layers"] = [LayerReport.from_dict(x) for x in d.get("layers", [])]
        kwargs["skipped"] = [SkippedLayer.from_dict(x) for x in d.get("skipped", [])]
        kwargs["calibration_skipped"] = [
            {"file": str(x["file"]), "reason": str(x["reason"])} for x in d.get("calibration_skipped", [])
        ]
        return cls(**kwargs)

    @classmethod
    def from_json(cls, text: str) -> QuantReport:
        return cls.from_dict(json.loads(text))


def coverage_text(coverage: dict[str, Any] | None) -> str | None:
    """``98.7 % of weight bytes quantized (float: 3 LayerNorm, 1 Embedding)`` from a report's
    ``coverage`` (None when it has none: an older file).  Free of torch, for every front end."""
    share = coverage.get("share") if coverage else None
    if share is None:
        return None
    counts: dict[str, int] = {}
    for row in (coverage or {}).get("float", []):
        counts[row["type"]] = counts.get(row["type"], 0) + 1
    listed = ", ".join(f"{n} {t}" for t, n in sorted(counts.items(), key=lambda kv: -kv[1]))
    return f"{100 * share:.1f} % of weight bytes quantized" + (f" (float: {listed})" if listed else "")
