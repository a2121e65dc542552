"""``mono-quant run JOB.toml ...``: run job files one after another; a failed job does not stop the rest."""

from __future__ import annotations

import argparse
import json
import sys
import time

from ..errors import MonoQuantError
from ..jobs import load_job, run_job
from .arguments import add_debug
from .progress_line import ProgressPrinter
from .results import JobRow, print_warnings, summary_table

EXAMPLES = """\
examples:
  mono-quant run job.toml
  mono-quant run jobs/*.toml                 # every job, then a summary table
  mono-quant run a.toml b.toml --json > summary.json

A job file is TOML with the sections [model], [quantization], [calibration],
[validation] and [output]; write one with: mono-quant quantize ... --save-job job.toml

exit status: 0 every job done, 1 at least one job failed, 2 bad usage
"""


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``run``."""
    p = commands.add_parser(
        "run", help="run job files", epilog=EXAMPLES, description="Run each job file in turn and print a summary."
    )
    p.set_defaults(command=run)
    p.add_argument("jobs", nargs="+", metavar="JOB.toml", help="job files, run in the order given")
    p.add_argument("--json", action="store_true", help="print the summary as JSON on stdout instead of a table")
    add_debug(p)


def run(args: argparse.Namespace) -> int:
    """Run every job, print the summary; 1 when any job failed."""
    rows = [_run_one(path, index, len(args.jobs), args.debug) for index, path in enumerate(args.jobs)]
    if args.json:
        print(json.dumps([row.to_dict() for row in rows], indent=2))
    else:
        print(summary_table(rows))
    return 0 if all(row.status == "done" for row in rows) else 1


def _run_one(path: str, index: int, count: int, debug: bool) -> JobRow:
    """Run one job file; every error of that job (even a bug) becomes its row, not the end of the batch."""
    printer = ProgressPrinter(sys.stderr)
    printer.label = f"{path}: " if count > 1 else ""
    started = time.perf_counter()
    try:
        job = load_job(path)
        printer(0, 0, f"job {index + 1} of {count}")
        outcome = run_job(job, progress=printer)
    except Exception as exc:
        printer.finish()
        if debug:
            import traceback

            traceback.print_exc()
        message = str(exc) if isinstance(exc, MonoQuantError) else f"{type(exc).__name__}: {exc}"
        # Errors about the job file itself already start with its name.
        message = message.removeprefix(f"{path}: ")
        print(f"mono-quant: error: {path}: {message}", file=sys.stderr)
        return JobRow(job=path, status="failed", error=message, elapsed_s=time.perf_counter() - started)
    printer.finish()
    print_warnings(outcome.report)
    return JobRow(
        job=path,
        status="done",
        output=outcome.output,
        output_sqnr_db=outcome.report.output_sqnr_db,
        file_bytes=outcome.file_bytes,
        elapsed_s=outcome.elapsed_s,
    )
