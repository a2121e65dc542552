"""How finished runs are shown: the one-line result of ``quantize``, the table of ``run``."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from typing import Any

from ..config import describe_algorithm
from ..jobs import JobOutcome
from ..report import QuantReport, format_db, human_bytes


def print_warnings(report: QuantReport) -> None:
    """The report's warnings on stderr, one per line."""
    for warning in report.warnings:
        print(f"mono-quant: warning: {warning}", file=sys.stderr)


def quantize_summary(outcome: JobOutcome) -> str:
    """``wrote q.safetensors (12.0 KiB; float weights 47.0 KiB); output SQNR 41.2 dB; ...``."""
    report = outcome.report
    line = (
        f"wrote {_shown_path(outcome.output)} ({human_bytes(outcome.file_bytes)}; float weights "
        f"{human_bytes(report.original_bytes)}); output SQNR {format_db(report.output_sqnr_db)}; "
        f"{len(report.layers)} layers quantized, {len(report.skipped)} skipped; "
        f"{outcome.elapsed_s:.1f} s"
    )
    from ..coverage import share_line  # imports torch: not at --help time

    coverage = share_line(report.coverage)
    extra = [algorithm_line(report.algorithm), *([coverage] if coverage else [])]
    return "\n".join([line, *extra, *metric_lines(report), *target_lines(report)])


def algorithm_line(settings: dict[str, Any] | None) -> str:
    """``algorithm GPTQ (damp 0.01)``: the line ``quantize`` prints after its result."""
    return f"algorithm {describe_algorithm(settings)}"


def metric_lines(report: QuantReport) -> list[str]:
    """``metric evaluate: float 0.9883, quantized 0.9850, delta -0.0033`` per value of the task metric."""
    return [
        f"metric {name}: float {_number(m.get('float'))}, quantized {_number(m.get('quantized'))}, "
        f"delta {_number(m.get('delta'), signed=True)}"
        for name, m in report.metrics.items()
    ]


def target_lines(report: QuantReport) -> list[str]:
    """Whether the accuracy target was reached, and each layer kept float or widened for it."""
    target = report.accuracy_target
    if target is None:
        return []
    wanted = []
    if target.get("output_sqnr_db") is not None:
        wanted.append(f"output SQNR >= {format_db(target['output_sqnr_db'])}")
    if target.get("metric_drop") is not None:
        achieved = target.get("achieved_metric_drop")
        wanted.append(f"metric drop <= {target['metric_drop']:g} (got {_number(achieved)})")
    verdict = "reached" if target.get("reached") else "NOT reached"
    kept = report.kept_for_accuracy
    tries, layers = target.get("evaluations"), "layer" if len(kept) == 1 else "layers"
    lines = [
        f"target {' and '.join(wanted)}: {verdict} after {tries} evaluation{'' if tries == 1 else 's'}; "
        f"{len(kept)} {layers} kept for accuracy" + (":" if kept else "")
    ]
    lines += [f"  {k['name'] or '(model)'}: {k['from']} -> {k['to']} ({k['reason']})" for k in kept]
    return lines


def _number(value: float | None, signed: bool = False) -> str:
    if value is None:
        return "—"
    return f"{value:+.4f}" if signed else f"{value:.4f}"


@dataclass
class JobRow:
    """One line of ``run``'s summary: a job file and how its run ended."""

    job: str
    status: str  # done | failed
    output: str | None = None
    output_sqnr_db: float | None = None
    file_bytes: int | None = None
    elapsed_s: float = 0.0
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        sqnr: float | str | None = self.output_sqnr_db
        if isinstance(sqnr, float) and sqnr in (float("inf"), float("-inf")):
            sqnr = "inf" if sqnr > 0 else "-inf"
        return {
            "job": self.job,
            "status": self.status,
            "output": self.output,
            "output_sqnr_db": sqnr,
            "file_bytes": self.file_bytes,
            "elapsed_s": round(self.elapsed_s, 3),
            "error": self.error,
        }


def summary_table(rows: list[JobRow]) -> str:
    """The table ``run`` prints, then one line per failed job with its message."""
    header = ["job", "status", "output", "SQNR", "size", "time"]
    body = [
        [
            r.job,
            r.status,
            _shown_path(r.output) if r.output else "—",
            format_db(r.output_sqnr_db),
            human_bytes(r.file_bytes),
            f"{r.elapsed_s:.1f} s",
        ]
        for r in rows
    ]
    widths = [max(len(line[i]) for line in [header, *body]) for i in range(len(header))]
    lines = [
        "  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=False)).rstrip() for line in [header, *body]
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    failed = [r for r in rows if r.status != "done"]
    done = len(rows) - len(failed)
    lines.append(f"\n{done} of {len(rows)} jobs done" + (f", {len(failed)} failed:" if failed else ""))
    lines += [f"  {r.job}: " + (r.error or "").replace("\n", "\n    ") for r in failed]
    return "\n".join(lines)


def _shown_path(path: str) -> str:
    """Relative to the current folder when inside it, else as it is."""
    relative = os.path.relpath(path)
    return path if relative.startswith(os.pardir) else relative
