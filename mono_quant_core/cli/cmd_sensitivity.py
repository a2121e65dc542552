"""``mono-quant sensitivity``: each selected layer quantized alone, ranked by what it costs the output."""

from __future__ import annotations

import argparse
import os
import sys
from typing import TYPE_CHECKING, Any, cast

from ..errors import ConfigError
from ..jobs.run import check_sources, resolve_metric
from ..jobs.text_files import write_text_atomic
from ..report import format_db
from .arguments import add_debug, add_ray, ray_retries
from .progress_line import ProgressPrinter
from .quant_flags import config_from_args, fold_flag, input_flags, metric_flag, quantization_flags

if TYPE_CHECKING:
    from ..sensitivity import SensitivityReport

EXAMPLES = """\
examples:
  mono-quant sensitivity --script model.py --checkpoint ckpt.pt --calib calib/
  mono-quant sensitivity --script model.py --checkpoint ckpt.pt --calib calib/ --metric evaluate \\
      --mode static --report sens.json
  mono-quant sensitivity --script model.py --calib calib/ --dtype int4 --mode weight-only \\
      --granularity per-group --group-size 64 --override 'head.*:dtype=float'
  mono-quant sensitivity --script model.py --checkpoint ckpt.pt --calib calib/ --ray local

The table lists the most sensitive layer first: the largest metric drop with --metric, else the
lowest output SQNR with only that layer quantized.

exit status: 0 success, 1 an unexpected error, 2 bad usage or input
"""


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``sensitivity``: quantize's model, calibration and quantization flags, ``--metric``, ``--report``."""
    p = commands.add_parser(
        "sensitivity",
        help="rank layers by how much quantizing each alone costs",
        epilog=EXAMPLES,
        description="Quantize each selected layer alone and measure the model's output SQNR (and task metric).",
    )
    p.set_defaults(command=run)
    input_flags(p)
    quantization_flags(p)
    fold_flag(p)
    check = p.add_argument_group("measuring")
    metric_flag(check)
    check.add_argument("--report", metavar="FILE.json", help="write the sensitivity report as JSON")
    add_ray(p, "the per-layer evaluations (the same results as here)")
    add_debug(p)


def run(args: argparse.Namespace) -> int:
    """Load the model and samples, measure every layer, print the table, write the report if asked."""
    config = config_from_args(args)
    retries = ray_retries(args)
    if not args.calib:
        raise ConfigError("--calib: sensitivity needs a folder of samples to run the model on", key="--calib")
    script, checkpoint, calib = (_absolute(p) for p in (args.script, args.checkpoint, args.calib))
    assert script is not None and calib is not None
    report_path = _absolute(args.report)
    if report_path is not None and not os.path.isdir(os.path.dirname(report_path)):
        raise ConfigError(f"{args.report}: the folder {os.path.dirname(report_path)} does not exist")
    check_sources(script, checkpoint, calib)
    from ..loading import load_calibration, load_model
    from ..loading.entries import parse_entry_kwargs
    from ..sensitivity import analyze_sensitivity

    printer = ProgressPrinter(sys.stderr)
    try:
        printer(0, 0, f"loading {os.path.basename(script)}")
        kwargs = parse_entry_kwargs(args.entry_kwargs, "--entry-kwargs")
        model = load_model(
            script, checkpoint, entry=args.entry, entry_kwargs=kwargs or None, strict=not args.non_strict
        )
        printer(0, 0, f"reading {os.path.basename(calib.rstrip(os.sep))}")
        samples = load_calibration(
            calib, samples=args.samples, seed=args.seed, skip_unusable=args.skip_unusable, model=model
        )
        metric = resolve_metric(script, args.metric, needed=False)
        cluster = None
        if args.ray is not None:
            from ..cluster import RayCluster, sensitivity_on

            cluster = RayCluster(args.ray, retries=retries)
            printer(0, 0, f"connecting to the Ray cluster at {args.ray}")
            cluster.connect()
        try:
            report = analyze_sensitivity(
                model,
                config,
                samples,
                metric=cast(Any, metric),
                progress=printer,
                evaluate_many=None if cluster is None else sensitivity_on(cluster),
            )
        finally:
            if cluster is not None:
                cluster.close()
    finally:
        printer.finish()
    if report_path is not None:
        write_text_atomic(report_path, report.to_json())
    print(sensitivity_table(report))
    return 0


def sensitivity_table(report: SensitivityReport) -> str:
    """Rank, layer, type, output SQNR, weight SQNR (and metric drop), then the all-quantized output SQNR."""
    with_metric = report.metric_name is not None
    header = ["rank", "layer", "type", "dtype", "output SQNR", "weight SQNR"]
    if with_metric:
        header.append(f"{report.metric_name} drop")
    body = []
    for layer in report.layers:
        row = [
            str(layer.rank),
            layer.name or "(model)",
            layer.type,
            layer.dtype,
            format_db(layer.output_sqnr_db),
            format_db(layer.weight_sqnr_db),
        ]
        if with_metric:
            row.append("—" if layer.metric_drop is None else f"{layer.metric_drop:+.4f}")
        body.append(row)
    widths = [max(len(line[i]) for line in [header, *body]) for i in range(len(header))]
    right = {0, 4, 5, 6}  # numbers line up on the right
    lines = [
        "  ".join(
            cell.rjust(w) if i in right else cell.ljust(w) for i, (cell, w) in enumerate(zip(line, widths, strict=True))
        ).rstrip()
        for line in [header, *body]
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    lines.append("")
    lines.append(
        f"all {len(report.layers)} layers quantized: output SQNR {format_db(report.all_quantized_output_sqnr_db)} "
        f"on {report.validation_samples} samples"
    )
    if with_metric and report.float_metric is not None:
        lines.append(f"{report.metric_name} of the float model: {report.float_metric:.4f}")
    if report.kept_float:
        lines.append(f"kept float by --override (not measured): {', '.join(report.kept_float)}")
    return "\n".join(lines)


def _absolute(path: str | None) -> str | None:
    return None if not path else os.path.abspath(path)
