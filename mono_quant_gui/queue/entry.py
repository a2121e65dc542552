"""One row of the batch queue: a job (the job file of DESIGN.md §5), its status and what its last run said."""

from __future__ import annotations

import copy
import os
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from mono_quant_core.jobs import Job

QUEUED, RUNNING, DONE, FAILED, CANCELLED = "queued", "running", "done", "failed", "cancelled"
STATUSES = (QUEUED, RUNNING, DONE, FAILED, CANCELLED)
#: Statuses that Retry puts back in the queue.
RETRYABLE = (FAILED, CANCELLED)

_PATH_FIELDS = ("script", "checkpoint", "calibration_folder", "output", "report_path")


@dataclass
class QueueEntry:
    """A queued job; ``progress`` is a percentage (0-100), ``details`` the traceback of a failure,
    ``host`` where its last run ran (``this computer``, or a cluster node's name; empty before a run)."""

    job: Job
    name: str
    status: str = QUEUED
    message: str = ""
    details: str = ""
    progress: int = 0
    host: str = ""
    id: str = field(default_factory=lambda: uuid.uuid4().hex)


def absolute_job(job: Job) -> Job:
    """A deep copy of ``job`` whose paths are absolute (the queue file must not depend on the working folder)."""
    job = copy.deepcopy(job)  # the caller may keep editing its Job and QuantConfig
    changes = {name: os.path.abspath(getattr(job, name)) for name in _PATH_FIELDS if getattr(job, name) is not None}
    return job.replace(**changes)


def default_name(job: Job) -> str:
    """The output file's name without its extension: ``ckpt.int8`` for ``ckpt.int8.safetensors``."""
    return Path(job.output).stem or Path(job.script).stem
