"""Job files (TOML, DESIGN.md §5) and ``run_job``, shared by the CLI and the GUI's queue.

Torch-free to import: ``run_job`` loads the engine when it runs.
"""

from __future__ import annotations

from .job import Job
from .job_reader import load_job, parse_job
from .run import JobOutcome, run_job
from .schema import SECTIONS

__all__ = ["SECTIONS", "Job", "JobOutcome", "load_job", "parse_job", "run_job"]
