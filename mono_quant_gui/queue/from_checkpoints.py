"""Several dropped checkpoints → one job each, with the current settings (DESIGN.md §7, drag and drop)."""

from __future__ import annotations

import copy
import importlib.resources
import os
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

from PySide6.QtCore import QStandardPaths

from mono_quant_core.config import CHECKPOINT_SUFFIXES, checkpoint_suffix
from mono_quant_core.errors import ConfigError
from mono_quant_core.jobs import Job


def checkpoint_stem(path: str) -> str:
    """The file name without its checkpoint extension: ``resnet-v1.5`` for ``resnet-v1.5.pt``."""
    name = os.path.basename(path)
    suffix = checkpoint_suffix(name)
    if suffix is not None and len(name) > len(suffix):
        return name[: -len(suffix)]
    raise ConfigError(f"{path}: not a checkpoint (expected one of {', '.join(CHECKPOINT_SUFFIXES)})")


def _resources_folder() -> str:
    return os.path.realpath(str(importlib.resources.files("mono_quant_gui.resources")))


def _inside(path: str, folder: str) -> bool:
    path, folder = os.path.normcase(os.path.realpath(path)), os.path.normcase(folder)
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def output_folder(source: str) -> str:
    """The folder of ``source`` (a checkpoint or script), or the user's documents folder when
    that one is the application's own (the demo) or cannot be written."""
    folder = os.path.dirname(os.path.abspath(source))
    if not _inside(folder, _resources_folder()) and os.access(folder, os.W_OK):
        return folder
    documents = QStandardPaths.writableLocation(QStandardPaths.StandardLocation.DocumentsLocation)
    return documents if documents and os.path.isdir(documents) else str(Path.home())


def numbered_output(folder: str, stem: str, dtype: str, taken: Iterable[str] = ()) -> str:
    """``<folder>/<stem>.<dtype>.safetensors``, or ``…-2``, ``-3``… when that file exists or is
    in ``taken`` (outputs other jobs will write)."""
    used = {os.path.normcase(os.path.abspath(p)) for p in taken}
    path, n = os.path.join(folder, f"{stem}.{dtype}.safetensors"), 2
    while os.path.normcase(os.path.abspath(path)) in used or os.path.exists(path):
        path, n = os.path.join(folder, f"{stem}.{dtype}-{n}.safetensors"), n + 1
    return path


def jobs_from_checkpoints(
    paths: Iterable[str | os.PathLike], template_job: Job, taken: Iterable[str] = ()
) -> list[Job]:
    """One copy of ``template_job`` per checkpoint, writing ``<stem>.<dtype>.safetensors`` in
    :func:`output_folder` of each (next to it when that folder is the user's and writable).

    Two checkpoints with the same stem in one folder (``a.pt``, ``a.bin``) keep
    their extension in the name (``a.pt.int8.safetensors``); an output that
    exists or is in ``taken`` (other queued jobs' outputs) is numbered, so no
    file is written twice.  A report is written next to each output when the
    template asks for one.  A checkpoint given twice makes one job;
    ``template_job`` is not changed.
    """
    paths = list(dict.fromkeys(os.path.abspath(os.fspath(p)) for p in paths))
    dtype = template_job.config.dtype
    stems = [checkpoint_stem(p) for p in paths]
    clashes = Counter((os.path.dirname(p), s) for p, s in zip(paths, stems, strict=False))
    used = list(taken)
    jobs = []
    for path, stem in zip(paths, stems, strict=False):
        base = os.path.basename(path) if clashes[os.path.dirname(path), stem] > 1 else stem
        output = numbered_output(output_folder(path), base, dtype, used)
        used.append(output)
        report = output.removesuffix(".safetensors") + ".report.json" if template_job.report_path else None
        jobs.append(copy.deepcopy(template_job).replace(checkpoint=path, output=output, report_path=report))
    return jobs
