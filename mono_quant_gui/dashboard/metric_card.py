"""What the Metric card says of a report: the task metric on the float and the quantized model, and,
with a metric-drop target, whether the drop stayed within it."""

from __future__ import annotations

from typing import Any

from mono_quant_gui.window import colors

#: The card without a metric reads "no metric — define evaluate(model)" (value, detail; the card is narrow).
NO_METRIC_VALUE = "no metric"
NO_METRIC = "define evaluate(model)"
NO_METRIC_TIP = "No task metric: define evaluate(model) in the model script to measure it on both models"


def is_score(entry: dict[str, Any]) -> bool:
    """A higher-is-better value within [0, 1] (an accuracy, an F1): shown as a percentage."""
    values = [v for v in (entry.get("float"), entry.get("quantized")) if v is not None]
    return bool(entry.get("higher_is_better", True)) and bool(values) and all(0.0 <= v <= 1.0 for v in values)


def format_value(value: float | None, score: bool) -> str:
    if value is None:
        return "—"
    return f"{value * 100:.1f} %" if score else f"{value:.4g}"


def format_change(value: float, score: bool, sign: bool = True) -> str:
    """A difference of two values: percentage points for a score."""
    text = f"{value * 100:+.1f} pt" if score else f"{value:+.4g}"
    if not sign:
        text = text.lstrip("+")
    return text.replace("-", "−")


def metric_figures(report: Any) -> tuple[str, str, str | None]:
    """The card's value, detail and colour (None: the default) for ``report``."""
    if not report.metrics:
        return NO_METRIC_VALUE, NO_METRIC, None
    entry = next(iter(report.metrics.values()))  # the first value is the one targets compare
    score = is_score(entry)
    detail = f"float {format_value(entry.get('float'), score)}"  # the card is narrow: two short lines
    target = report.accuracy_target or {}
    allowed = target.get("metric_drop")
    color = None
    if allowed is not None:  # the colour says whether the drop stayed within the target
        drop = target.get("achieved_metric_drop")
        color = colors.OK if drop is not None and drop <= allowed else colors.ERROR
        detail += f" · max drop {format_change(allowed, score, sign=False)}"
    elif entry.get("delta") is not None:
        detail += f" · Δ {format_change(entry['delta'], score)}"
    return format_value(entry.get("quantized"), score), detail, color


def sqnr_target(report: Any) -> tuple[str, str] | None:
    """``(text, colour)`` for an output-SQNR target: reached or not; None without one."""
    target = report.accuracy_target or {}
    wanted = target.get("output_sqnr_db")
    if wanted is None:
        return None
    achieved = target.get("achieved_output_sqnr_db")
    reached = achieved is not None and achieved >= wanted
    return (f"target {wanted:g} dB {'reached' if reached else 'not reached'}", colors.OK if reached else colors.ERROR)


def metric_tooltip(report: Any) -> str:
    """Every value the metric returned: float → quantized (change), one line each."""
    if not report.metrics:
        return NO_METRIC_TIP
    lines = []
    for name, entry in report.metrics.items():
        score = is_score(entry)
        line = f"{name}: {format_value(entry.get('float'), score)} → {format_value(entry.get('quantized'), score)}"
        if entry.get("delta") is not None:
            line += f" ({format_change(entry['delta'], score)})"
        lines.append(line)
    return "\n".join(lines)
