"""Importing job files into the queue and exporting queued jobs as job files (DESIGN.md §5)."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from mono_quant_core.errors import MonoQuantError
from mono_quant_core.jobs import Job
from mono_quant_gui.queue.entry import QueueEntry


def read_job_files(paths: Iterable[str]) -> tuple[list[Job], list[str], list[str]]:
    """Read each job file: (jobs, their names — the file stems —, one error message per unreadable file)."""
    jobs, names, errors = [], [], []
    for path in paths:
        try:
            jobs.append(Job.load(path))
        except MonoQuantError as exc:
            errors.append(str(exc))
            continue
        names.append(Path(path).stem)
    return jobs, names, errors


def export_entries(entries: list[QueueEntry], target: str) -> list[str]:
    """Write the jobs as job files: to ``target`` itself for one job named ``*.toml``, else into
    the folder ``target`` as ``<name>.toml`` (numbered when names repeat).  Returns the paths written."""
    if len(entries) == 1 and target.lower().endswith(".toml") and not os.path.isdir(target):
        entries[0].job.save(target)
        return [target]
    written: list[str] = []
    for entry in entries:
        stem = _safe_name(entry.name)
        path, n = os.path.join(target, f"{stem}.toml"), 2
        while path in written or os.path.exists(path):
            path, n = os.path.join(target, f"{stem}-{n}.toml"), n + 1
        entry.job.save(path)
        written.append(path)
    return written


def _safe_name(name: str) -> str:
    cleaned = "".join("_" if c in '<>:"/\\|?*' or ord(c) < 32 else c for c in name).strip(" .")
    return cleaned or "job"
