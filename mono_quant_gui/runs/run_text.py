"""How a run and a comparison read in the Runs pane, free of Qt: one row's texts, deltas, verdicts."""

from __future__ import annotations

import json
import math
from typing import Any

from mono_quant_core.config import describe_algorithm, is_cast_dtype
from mono_quant_core.report import format_db, human_bytes
from mono_quant_gui.window.formatting import format_duration, format_share

BETTER, WORSE, SAME = "better", "worse", "same"


def settings_summary(report: Any) -> str:
    """``int8 static · per-tensor · minmax · GPTQ (damp 0.01) · 2 overrides · auto · 1 kept for
    accuracy``: what a run was asked to do (its algorithm when not plain round to nearest), and how
    many layers the accuracy target kept float or widened."""
    config = report.config or {}
    dtype, mode = config.get("dtype", report.dtype), config.get("mode", report.mode)
    parts = [f"{dtype} {mode}"]
    granularity = config.get("granularity")
    if granularity and not is_cast_dtype(dtype):
        parts.append(f"{granularity} {config.get('group_size')}" if granularity == "per-group" else granularity)
    if mode == "static" and config.get("observer"):
        parts.append(str(config["observer"]))
    if (report.algorithm or {}) != {"algorithm": "rtn"}:
        parts.append(describe_algorithm(report.algorithm))
    overrides = len(config.get("layer_overrides") or {})
    if overrides:
        parts.append(f"{overrides} override{'s' if overrides != 1 else ''}")
    if report.accuracy_target is not None or any(
        config.get(k) is not None for k in ("target_output_sqnr_db", "target_metric_drop")
    ):
        parts.append("auto")
    kept = len(report.kept_for_accuracy or [])
    if kept:
        parts.append(f"{kept} kept for accuracy")
    return " · ".join(parts)


def algorithm_text(report: Any) -> str:
    """``GPTQ (damp 0.01) + SmoothQuant 0.5``: how the run rounded its weights, with its options."""
    return describe_algorithm(report.algorithm)


def coverage_text(report: Any) -> str | None:
    """``99.9 % of weight bytes quantized``, or None for a report without coverage (an older one)."""
    share = (report.coverage or {}).get("share")
    return None if share is None else f"{format_share(share)} of weight bytes quantized"


#: At most this many float modules are listed by :func:`coverage_details` (the rest are counted).
MAX_FLOAT_LISTED = 12


def coverage_details(report: Any) -> str:
    """What stayed float and why, largest first: ``norm (LayerNorm, 1.0 KiB): no replacement``, one
    line each, under the bytes quantized and kept float ("" without coverage)."""
    coverage = report.coverage or {}
    if coverage.get("share") is None:
        return ""
    quantized, kept = coverage.get("quantized_weight_bytes", 0), coverage.get("float_weight_bytes", 0)
    lines = [f"{human_bytes(quantized)} of weights quantized, {human_bytes(kept)} kept float"]
    rows = [row for row in coverage.get("float", []) if row.get("bytes")]
    if rows:
        lines.append("Stayed float:")
    for row in rows[:MAX_FLOAT_LISTED]:
        lines.append(f"  {row['name'] or '(the model)'} ({row['type']}, {human_bytes(row['bytes'])}): {row['reason']}")
    if len(rows) > MAX_FLOAT_LISTED:
        rest = rows[MAX_FLOAT_LISTED:]
        lines.append(f"  and {len(rest)} more ({human_bytes(sum(r['bytes'] for r in rest))})")
    return "\n".join(lines)


def number(value: float | None) -> str:
    """A metric value to 4 significant digits, ``—`` when missing."""
    return "—" if value is None else f"{value:.4g}"


def number_delta(delta: float | None, like: float | None) -> str:
    """A metric's change, ``+``/``−``-signed, to as many decimals as :func:`number` gives ``like``
    (``0.9859`` → ``−0.0020``), so a value and its change line up; ``—`` when missing."""
    if delta is None:
        return "—"
    shown = number(like) if like is not None and math.isfinite(like) else f"{delta:.4g}"
    decimals = len(shown.split(".")[1]) if "." in shown and "e" not in shown else 0
    return f"{delta:+.{decimals}f}".replace("-", "−")


def metric_text(report: Any) -> str:
    """The first metric's quantized value and its change from the float model, or ``—``."""
    if not report.metrics:
        return "—"
    name, entry = next(iter(report.metrics.items()))
    value = entry.get("quantized")
    return f"{name} {number(value)} ({number_delta(entry.get('delta'), value)})"


def elapsed_text(seconds: float) -> str:
    return f"{seconds:.1f} s" if seconds < 60 else format_duration(seconds)


def db_delta_text(value: float | None, digits: int = 2) -> str:
    """``+1.25 dB``, ``−3.40 dB``, ``+∞ dB`` or ``—``."""
    if value is None:
        return "—"
    if math.isinf(value):
        return "+∞ dB" if value > 0 else "−∞ dB"
    return f"{value:+.{digits}f} dB".replace("-", "−")


def bytes_delta_text(value: int | None) -> str:
    """``+1.50 KiB`` / ``−22.1 KiB`` / ``0 B`` or ``—``."""
    if value is None:
        return "—"
    text = human_bytes(abs(value))
    return text if value == 0 else ("+" if value > 0 else "−") + text


def verdict(delta: float | None, higher_is_better: bool = True) -> str | None:
    """Whether B is better, worse or the same as A by ``delta`` (None: not comparable)."""
    if delta is None or math.isnan(delta):
        return None
    if delta == 0:
        return SAME
    return BETTER if (delta > 0) == higher_is_better else WORSE


def config_value(value: Any) -> str:
    """A config value in a table cell: ``—`` for None, lists and tables as compact JSON."""
    if value is None:
        return "—"
    if isinstance(value, (dict, list)):
        return json.dumps(value, separators=(", ", ": "))
    return str(value)


def summary_parts(c: Any) -> list[tuple[str, str | None]]:
    """``(text, verdict)`` of each headline of a comparison: output SQNR, size, file size, metrics."""
    parts = [
        (
            f"output SQNR {format_db(c.output_sqnr_a_db)} → {format_db(c.output_sqnr_b_db)} "
            f"({db_delta_text(c.output_sqnr_delta_db, 1)})",
            verdict(c.output_sqnr_delta_db),
        ),
        (
            f"size {human_bytes(c.quantized_bytes_a)} → {human_bytes(c.quantized_bytes_b)} "
            f"({bytes_delta_text(c.size_delta_bytes)})",
            verdict(c.size_delta_bytes, higher_is_better=False),
        ),
    ]
    if c.file_size_delta_bytes is not None:
        parts.append((f"file {bytes_delta_text(c.file_size_delta_bytes)}", verdict(c.file_size_delta_bytes, False)))
    for name, (qa, qb, delta) in c.metric_deltas.items():
        higher = c.metric_higher_is_better.get(name, True)
        text = f"{name} {number(qa)} → {number(qb)} ({number_delta(delta, qb if qb is not None else qa)})"
        parts.append((text, verdict(delta, higher)))
    return parts
