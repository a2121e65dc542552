"""Two runs side by side: what their configs differ in, and how each layer, the output, the size
and the task metric moved from run A to run B (torch-free: it reads reports only).

Every delta is B − A.  SQNR deltas follow :func:`db_delta`: ``inf`` (identical tensors) on both
sides is no change (0.0), not ``inf − inf`` (NaN); ``inf`` on one side only gives ``±inf``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from .report import QuantReport, _encode

_ABSENT = object()  # a config key one report lacks (shown as None)


def db_delta(a: float | None, b: float | None) -> float | None:
    """``b − a`` in dB; None when either was not measured; 0.0 when both are the same infinity
    (identical tensors in both runs), ``±inf`` when only one side is infinite."""
    if a is None or b is None:
        return None
    if math.isinf(a) and math.isinf(b) and (a > 0) == (b > 0):
        return 0.0
    return b - a


def _minus(a: float | int | None, b: float | int | None) -> Any:
    return None if a is None or b is None else b - a


@dataclass(frozen=True)
class LayerDelta:
    """One layer in either run; the fields of the run it is missing from are None."""

    name: str
    type: str
    dtype_a: str | None
    dtype_b: str | None
    weight_sqnr_a_db: float | None
    weight_sqnr_b_db: float | None
    output_sqnr_a_db: float | None
    output_sqnr_b_db: float | None
    #: ``output_sqnr_b_db − output_sqnr_a_db`` by :func:`db_delta` (None when either is missing).
    delta_output_db: float | None
    in_a: bool
    in_b: bool


@dataclass
class ReportComparison:
    """Run B against run A; every delta is B − A."""

    #: ``(key, value in A, value in B)`` for each differing key of the reports' ``config`` dicts:
    #: A's keys in order, then B's extras; a key one side lacks reads None there.
    config_diff: list[tuple[str, Any, Any]] = field(default_factory=list)
    #: The union of both runs' quantized layers: A's order, then B's extras.
    layers: list[LayerDelta] = field(default_factory=list)
    output_sqnr_a_db: float | None = None
    output_sqnr_b_db: float | None = None
    output_sqnr_delta_db: float | None = None
    quantized_bytes_a: int = 0
    quantized_bytes_b: int = 0
    size_delta_bytes: int = 0
    #: The saved files' sizes; the delta is None unless both runs were saved.
    file_bytes_a: int | None = None
    file_bytes_b: int | None = None
    file_size_delta_bytes: int | None = None
    #: ``{name: (quantized value in A, in B, B − A)}`` over both runs' metrics (None where one lacks it).
    metric_deltas: dict[str, tuple[float | None, float | None, float | None]] = field(default_factory=dict)
    #: ``{name: higher_is_better}`` of each metric in ``metric_deltas``.
    metric_higher_is_better: dict[str, bool] = field(default_factory=dict)

    def layer(self, name: str) -> LayerDelta:
        for layer in self.layers:
            if layer.name == name:
                return layer
        raise KeyError(name)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able (``inf`` as ``"inf"``, as in reports; tuples as lists)."""
        data = asdict(self)
        data["config_diff"] = [{"key": k, "a": a, "b": b} for k, a, b in self.config_diff]
        return _encode(data)


def _config_diff(a: dict[str, Any], b: dict[str, Any]) -> list[tuple[str, Any, Any]]:
    keys = [*a, *(k for k in b if k not in a)]
    diff = []
    for key in keys:
        va, vb = a.get(key, _ABSENT), b.get(key, _ABSENT)
        if va != vb:  # nested dicts and lists compare by value
            diff.append((key, None if va is _ABSENT else va, None if vb is _ABSENT else vb))
    return diff


def _layer_deltas(a: QuantReport, b: QuantReport) -> list[LayerDelta]:
    in_a = {layer.name: layer for layer in a.layers}
    in_b = {layer.name: layer for layer in b.layers}
    names = [*in_a, *(n for n in in_b if n not in in_a)]
    deltas = []
    for name in names:
        la, lb = in_a.get(name), in_b.get(name)
        either = la if la is not None else in_b[name]
        out_a = la.output_sqnr_db if la is not None else None
        out_b = lb.output_sqnr_db if lb is not None else None
        deltas.append(
            LayerDelta(
                name=name,
                type=either.type,
                dtype_a=la.dtype if la is not None else None,
                dtype_b=lb.dtype if lb is not None else None,
                weight_sqnr_a_db=la.weight_sqnr_db if la is not None else None,
                weight_sqnr_b_db=lb.weight_sqnr_db if lb is not None else None,
                output_sqnr_a_db=out_a,
                output_sqnr_b_db=out_b,
                delta_output_db=db_delta(out_a, out_b),
                in_a=la is not None,
                in_b=lb is not None,
            )
        )
    return deltas


def _metric_deltas(
    a: QuantReport, b: QuantReport
) -> tuple[dict[str, tuple[float | None, float | None, float | None]], dict[str, bool]]:
    names = [*a.metrics, *(n for n in b.metrics if n not in a.metrics)]
    deltas, higher = {}, {}
    for name in names:
        ma, mb = a.metrics.get(name, {}), b.metrics.get(name, {})
        qa, qb = ma.get("quantized"), mb.get("quantized")
        deltas[name] = (qa, qb, _minus(qa, qb))
        higher[name] = bool(ma.get("higher_is_better", mb.get("higher_is_better", True)))
    return deltas, higher


def compare_reports(a: QuantReport, b: QuantReport) -> ReportComparison:
    """Run ``b`` against run ``a`` (deltas are B − A)."""
    metric_deltas, higher = _metric_deltas(a, b)
    return ReportComparison(
        config_diff=_config_diff(a.config or {}, b.config or {}),
        layers=_layer_deltas(a, b),
        output_sqnr_a_db=a.output_sqnr_db,
        output_sqnr_b_db=b.output_sqnr_db,
        output_sqnr_delta_db=db_delta(a.output_sqnr_db, b.output_sqnr_db),
        quantized_bytes_a=a.quantized_bytes,
        quantized_bytes_b=b.quantized_bytes,
        size_delta_bytes=b.quantized_bytes - a.quantized_bytes,
        file_bytes_a=a.file_bytes,
        file_bytes_b=b.file_bytes,
        file_size_delta_bytes=_minus(a.file_bytes, b.file_bytes),
        metric_deltas=metric_deltas,
        metric_higher_is_better=higher,
    )
