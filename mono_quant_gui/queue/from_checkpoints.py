"""Several dropped checkpoints → one job each, with the current settings (DESIGN.md §7, drag and drop)."""

from __future__ import annotations

import copy
import os
from collections import Counter
from collections.abc import Iterable

from mono_quant_core.errors import ConfigError
from mono_quant_core.jobs import Job

from ..drop import CHECKPOINT_SUFFIXES


def checkpoint_stem(path: str) -> str:
    """The file name without its checkpoint extension: ``resnet-v1.5`` for ``resnet-v1.5.pt``."""
    name = os.path.basename(path)
    for suffix in sorted(CHECKPOINT_SUFFIXES, key=len, reverse=True):
        if name.lower().endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)]
    raise ConfigError(f"{path}: not a checkpoint (expected one of {', '.join(CHECKPOINT_SUFFIXES)})")


def jobs_from_checkpoints(paths: Iterable[str | os.PathLike], template_job: Job) -> list[Job]:
    """One copy of ``template_job`` per checkpoint, writing ``<stem>.<dtype>.safetensors`` next to it.

    Two checkpoints with the same stem in one folder (``a.pt``, ``a.bin``) keep
    their extension in the name (``a.pt.int8.safetensors``) so no output is
    written twice.  A report is written next to each output when the template
    asks for one.  A checkpoint given twice makes one job; ``template_job``
    is not changed.
    """
    paths = list(dict.fromkeys(os.path.abspath(os.fspath(p)) for p in paths))
    dtype = template_job.config.dtype
    stems = [checkpoint_stem(p) for p in paths]
    clashes = Counter((os.path.dirname(p), s) for p, s in zip(paths, stems))
    jobs = []
    for path, stem in zip(paths, stems):
        folder = os.path.dirname(path)
        base = os.path.basename(path) if clashes[folder, stem] > 1 else stem
        output = os.path.join(folder, f"{base}.{dtype}.safetensors")
        report = os.path.join(folder, f"{base}.{dtype}.report.json") if template_job.report_path else None
        jobs.append(copy.deepcopy(template_job).replace(checkpoint=path, output=output, report_path=report))
    return jobs
