"""``mono-quant quantize``: one model, settings from flags, optionally saved as a job file."""

from __future__ import annotations

import argparse
import os
import sys

from .. import config as cfg
from ..config import QuantConfig
from ..errors import ConfigError
from ..jobs import Job, run_job
from ..jobs.schema import config_section
from .arguments import add_debug, canonical, natural_int, positive_int
from .progress_line import ProgressPrinter
from .results import print_warnings, quantize_summary

EXAMPLES = """\
examples:
  mono-quant quantize --script model.py --checkpoint ckpt.pt --out model.int8.safetensors
  mono-quant quantize --script model.py --checkpoint ckpt.pt --calib calib/ --samples 64 \\
      --mode static --observer histogram --exclude 'head.*' --out model.int8.pt
  mono-quant quantize --script model.py --dtype int4 --mode weight-only --granularity per-group \\
      --group-size 64 --min-output-sqnr 25 --report report.json --out model.int4.safetensors
  mono-quant quantize --script model.py --checkpoint ckpt.pt --out out.safetensors \\
      --save-job job.toml --no-run          # only write the job; run it later with: mono-quant run job.toml

exit status: 0 success, 1 validation failed, 2 bad usage or input
"""

#: QuantConfig fields set by flags, and the flag of each (the others keep their defaults).
CONFIG_FLAGS = {
    "dtype": "--dtype",
    "mode": "--mode",
    "scheme": "--scheme",
    "granularity": "--granularity",
    "group_size": "--group-size",
    "observer": "--observer",
    "include_types": "--include-type",
    "exclude_types": "--exclude-type",
    "include": "--include",
    "exclude": "--exclude",
    "layers": "--layers",
    "on_failure": "--on-failure",
    "min_output_sqnr_db": "--min-output-sqnr",
}
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
    **{(config_section(name), name): flag for name, flag in CONFIG_FLAGS.items()},
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
    _input_flags(p)
    _quantization_flags(p)
    _output_flags(p)
    add_debug(p)


def _input_flags(p: argparse.ArgumentParser) -> None:
    model = p.add_argument_group("model")
    model.add_argument("--script", required=True, metavar="FILE.py", help="the script defining the model")
    model.add_argument("--entry", metavar="NAME", help="factory function, class or instance in the script")
    model.add_argument("--entry-kwargs", metavar="JSON", help="keyword arguments for the entry, e.g. '{\"width\": 8}'")
    model.add_argument("--checkpoint", metavar="FILE", help=".pt/.pth/.bin/.ckpt/.safetensors weights")
    model.add_argument(
        "--non-strict", action="store_true", help="load a checkpoint with missing or unexpected keys (they are listed)"
    )
    calib = p.add_argument_group("calibration")
    calib.add_argument("--calib", metavar="DIR", help="folder of calibration tensors (required by --mode static)")
    calib.add_argument("--samples", type=positive_int, metavar="N", help="use N calibration files")
    calib.add_argument("--seed", type=natural_int, metavar="N", help="pick the N files at random with this seed")
    calib.add_argument(
        "--skip-unusable",
        action="store_true",
        help="leave out calibration files that cannot be used (the report lists them) instead of failing",
    )


def _quantization_flags(p: argparse.ArgumentParser) -> None:
    quant = p.add_argument_group("quantization")
    for flag, choices, default in (
        ("--dtype", cfg.DTYPES, "int8"),
        ("--mode", cfg.MODES, "dynamic"),
        ("--scheme", cfg.SCHEMES, "symmetric"),
        ("--granularity", cfg.GRANULARITIES, "per-channel"),
    ):
        quant.add_argument(flag, type=canonical, choices=choices, help=f"default {default}")
    quant.add_argument("--group-size", type=positive_int, metavar="N", help="per-group size (default 128)")
    quant.add_argument("--observer", type=canonical, choices=cfg.OBSERVERS, help="default minmax")
    for flag, dest, what in (
        ("--include-type", "include_types", "TYPE"),
        ("--exclude-type", "exclude_types", "TYPE"),
        ("--include", "include", "GLOB"),
        ("--exclude", "exclude", "GLOB"),
        ("--layers", "layers", "NAME"),
    ):
        quant.add_argument(flag, dest=dest, nargs="+", action="extend", metavar=what)
    check = p.add_argument_group("validation")
    check.add_argument("--on-failure", type=canonical, choices=cfg.ON_FAILURE, help="default error")
    check.add_argument(
        "--min-output-sqnr",
        dest="min_output_sqnr_db",
        type=float,
        metavar="DB",
        help="fail (see --on-failure) when the output SQNR is lower",
    )


def _output_flags(p: argparse.ArgumentParser) -> None:
    out = p.add_argument_group("output")
    out.add_argument("--out", required=True, metavar="FILE", help=".safetensors or .pt output file")
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

    settings = {name: getattr(args, name) for name in CONFIG_FLAGS if getattr(args, name) is not None}
    try:
        config = QuantConfig(**settings)
    except ConfigError as exc:
        if exc.key is None or exc.problem is None:
            raise
        flag = CONFIG_FLAGS.get(exc.key, exc.key)
        raise ConfigError(f"{flag}: {exc.problem}", key=flag, problem=exc.problem) from None
    if config.needs_calibration and not args.calib:
        raise ConfigError(
            "--mode static needs --calib DIR, a folder of calibration tensors to measure activation ranges on"
        )
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
        )
    except ConfigError as exc:
        job_flag = JOB_FLAGS.get((exc.section or "", exc.key or ""))
        if job_flag is None or exc.problem is None:
            raise
        raise ConfigError(f"{job_flag}: {exc.problem}", key=job_flag, problem=exc.problem) from None


def _absolute(path: str | None) -> str | None:
    return None if not path else os.path.abspath(path)
