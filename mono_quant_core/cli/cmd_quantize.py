"""``mono-quant quantize``: one model, settings from flags, optionally saved as a job file."""

from __future__ import annotations

import argparse
import os
import sys

from ..config import QuantConfig, needs_samples
from ..errors import ConfigError
from ..jobs import Job, run_job
from ..jobs.schema import config_key, config_section
from .arguments import add_debug
from .progress_line import ProgressPrinter
from .quant_flags import (
    CONFIG_FLAGS,
    algorithm_flags,
    config_from_args,
    input_flags,
    quantization_flags,
    validation_flags,
)
from .results import print_warnings, quantize_summary

EXAMPLES = """\
examples:
  mono-quant quantize --script model.py --checkpoint ckpt.pt --out model.int8.safetensors
  mono-quant quantize --script model.py --checkpoint ckpt.pt --calib calib/ --samples 64 \\
      --mode static --observer histogram --exclude 'head.*' --out model.int8.pt
  mono-quant quantize --script model.py --dtype int4 --mode weight-only --granularity per-group \\
      --group-size 64 --min-output-sqnr 25 --report report.json --out model.int4.safetensors
  mono-quant quantize --script model.py --checkpoint ckpt.pt --calib calib/ --metric evaluate \\
      --target-sqnr 35 --target-metric-drop 0.01 --override 'head.*:dtype=int8' --out model.int8.safetensors
  mono-quant quantize --script model.py --checkpoint ckpt.pt --out out.safetensors \\
      --save-job job.toml --no-run          # only write the job; run it later with: mono-quant run job.toml

exit status: 0 success, 1 validation failed, 2 bad usage or input
"""

#: Job-file (section, key) -> the flag that sets it.
JOB_FLAGS = {
    ("model", "script"): "--script",
    ("model", "entry"): "--entry",
    ("model", "entry_kwargs"): "--entry-kwargs",
    ("model", "checkpoint"): "--checkpoint",
    ("model", "strict"): "--non-strict",
    ("calibration", "folder"): "--calib",
    ("calibration", "samples"): "--samples",
    ("calibration", "seed"): "--seed",
    ("calibration", "skip_unusable"): "--skip-unusable",
    ("output", "path"): "--out",
    ("output", "report"): "--report",
    ("output", "max_shard_size"): "--max-shard-size",
    ("validation", "metric"): "--metric",
    **{(config_section(name), config_key(name)): flag for name, flag in CONFIG_FLAGS.items()},
}


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``quantize`` and its flags (DESIGN.md §5)."""
    p = commands.add_parser(
        "quantize",
        help="quantize one model",
        epilog=EXAMPLES,
        description="Quantize the model a script defines and save it as .safetensors or .pt.",
    )
    p.set_defaults(command=run)
    input_flags(p)
    quantization_flags(p)
    algorithm_flags(p)
    validation_flags(p)
    _output_flags(p)
    add_debug(p)


def _output_flags(p: argparse.ArgumentParser) -> None:
    out = p.add_argument_group("output")
    out.add_argument("--out", required=True, metavar="FILE", help=".safetensors or .pt output file")
    out.add_argument(
        "--max-shard-size",
        metavar="SIZE",
        help="write a .safetensors output larger than SIZE (5GB, 500MB, 2GiB) as shards and an index "
        "(default: one file)",
    )
    out.add_argument("--report", metavar="FILE.json", help="write the report as JSON")
    out.add_argument("--save-job", metavar="FILE.toml", help="also write these settings as a job file")
    out.add_argument("--no-run", action="store_true", help="with --save-job: write the job, do not run it")


def run(args: argparse.Namespace) -> int:
    """Build the job from the flags, save it if asked, run it, print the result line."""
    if args.no_run and not args.save_job:
        raise ConfigError("--no-run: only useful with --save-job FILE.toml")
    job = job_from_args(args)
    if args.save_job:
        job.save(args.save_job)
        print(f"saved job {args.save_job}")
        if args.no_run:
            return 0
    printer = ProgressPrinter(sys.stderr)
    try:
        outcome = run_job(job, progress=printer)
    finally:
        printer.finish()
    print_warnings(outcome.report)
    print(quantize_summary(outcome))
    return 0


def job_from_args(args: argparse.Namespace) -> Job:
    """The Job the flags describe; errors name the flag."""
    from ..loading.entries import parse_entry_kwargs  # imports torch: not at --help time

    config = config_from_args(args)
    if config.needs_calibration and not args.calib:
        raise ConfigError(
            "--mode static needs --calib DIR, a folder of calibration tensors to measure activation ranges on"
        )
    if needs_samples(config) and not args.calib:
        flag = next(
            CONFIG_FLAGS[n] for n in ("algorithm", "smoothquant_alpha", "bias_correction") if _asks_samples(config, n)
        )
        raise ConfigError(f"{flag}: needs --calib DIR, calibration samples to run on", key=flag)
    for name in ("target_output_sqnr_db", "target_metric_drop"):
        if getattr(config, name) is not None and not args.calib:
            flag = CONFIG_FLAGS[name]
            raise ConfigError(f"{flag}: needs --calib DIR, samples to measure the model's output on", key=flag)
    try:
        return Job(
            script=os.path.abspath(args.script),
            output=os.path.abspath(args.out),
            entry=args.entry,
            entry_kwargs=parse_entry_kwargs(args.entry_kwargs, "--entry-kwargs"),
            checkpoint=_absolute(args.checkpoint),
            strict=not args.non_strict,
            config=config,
            calibration_folder=_absolute(args.calib),
            samples=args.samples,
            seed=args.seed,
            skip_unusable=args.skip_unusable,
            report_path=_absolute(args.report),
            metric=args.metric,
            max_shard_size=args.max_shard_size,
        )
    except ConfigError as exc:
        job_flag = JOB_FLAGS.get((exc.section or "", exc.key or ""))
        if job_flag is None or exc.problem is None:
            raise
        raise ConfigError(f"{job_flag}: {exc.problem}", key=job_flag, problem=exc.problem) from None


def _asks_samples(config: QuantConfig, name: str) -> bool:
    """Whether the option ``name`` of ``config`` is one that runs on calibration samples."""
    if name == "algorithm":
        return config.algorithm == "gptq"
    if name == "smoothquant_alpha":
        return config.smoothquant_alpha is not None
    return bool(config.bias_correction)


def _absolute(path: str | None) -> str | None:
    return None if not path else os.path.abspath(path)
