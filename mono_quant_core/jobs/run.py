"""``run_job``: load the model, read calibration, quantize, save, write the report — one job.

The CLI (``quantize`` and ``run``) and the GUI's queue all call this, so a job
exported from the application and run from a terminal writes the same tensors.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

from ..errors import CalibrationError, CheckpointError, ConfigError, MetricError, ScriptError, ValidationFailed
from ..progress import CancelLike, ProgressFn, check_cancel
from .job import Job
from .text_files import write_text_atomic

if TYPE_CHECKING:
    from ..metrics import Metric
    from ..report import LayerReport, QuantReport


@dataclass
class JobOutcome:
    """A finished job: where its file went and what the run measured."""

    job: Job
    output: str
    file_bytes: int
    report: QuantReport
    report_path: str | None
    elapsed_s: float


def run_job(
    job: Job,
    progress: ProgressFn | None = None,
    cancel: CancelLike | None = None,
    on_layer: Callable[[LayerReport], None] | None = None,
) -> JobOutcome:
    """Run ``job`` end to end; raises MonoQuantError subclasses (ValidationFailed, Cancelled, ...).

    ``progress(done, total, message)`` gets ``total == 0`` while the amount of
    work is not known yet (loading); callbacks run on the calling thread.
    """
    job.validate()
    started = time.perf_counter()
    tracker = _Tracker(progress)
    check_cancel(cancel)
    _check_inputs(job)
    # Imported here so that job files can be read, and bad inputs reported, before torch loads.
    from ..loading import load_calibration, open_model
    from ..quantizer import quantize
    from ..serialization import save_quantized
    from ..serialization.read import resolve

    tracker(0, 0, f"loading {os.path.basename(job.script)}")
    # Lazily: the float weights stay in the checkpoint and each layer's are read when it is
    # quantized, so a model larger than memory quantizes (mono_quant_core.loading.lazy_model).
    model = open_model(
        job.script,
        job.checkpoint,
        entry=job.entry,
        entry_kwargs=job.entry_kwargs or None,
        strict=job.strict,
        lazy="auto",
    ).model
    calibration = None
    if job.calibration_folder is not None:
        check_cancel(cancel)
        tracker(0, 0, f"reading {os.path.basename(job.calibration_folder.rstrip(os.sep))}")
        calibration = load_calibration(
            job.calibration_folder, samples=job.samples, seed=job.seed, skip_unusable=job.skip_unusable, model=model
        )
    metric = resolve_metric(job.script, job.metric, needed=job.config.target_metric_drop is not None)
    try:
        result = quantize(
            model, job.config, calibration, progress=tracker, cancel=cancel, on_layer=on_layer, metric=cast(Any, metric)
        )
    except ValidationFailed as exc:
        if job.report_path is not None and exc.report is not None:
            write_text_atomic(job.report_path, exc.report.to_json())
        raise
    del model, calibration
    check_cancel(cancel)
    tracker(tracker.total, tracker.total, f"saving {os.path.basename(job.output)}")
    size = save_quantized(result, job.output, max_shard_bytes=job.max_shard_size)
    if job.report_path is not None:
        write_text_atomic(job.report_path, result.report.to_json())
    return JobOutcome(
        job=job,
        output=resolve(job.output),  # a sharded output: its index
        file_bytes=size,
        report=result.report,
        report_path=job.report_path,
        elapsed_s=time.perf_counter() - started,
    )


class _Tracker:
    """Passes progress on and remembers the last total, so saving can report 100 %."""

    def __init__(self, progress: ProgressFn | None):
        self._progress = progress
        self.total = 0

    def __call__(self, done: int, total: int, message: str) -> None:
        self.total = total or self.total
        if self._progress is not None:
            self._progress(done, total, message)


def resolve_metric(script: str, name: str | None, needed: bool) -> Metric | None:
    """The script's metric ``name``; without a name, ``evaluate`` when a target metric drop needs
    one (a MetricError saying so when the script has none), else None."""
    from ..metrics import load_metric

    if name is not None:
        return load_metric(script, name)
    if not needed:
        return None
    try:
        return load_metric(script)
    except MetricError as exc:
        raise MetricError(
            f"a target metric drop needs a task metric and none is named: {exc}", exc.script, exc.function
        ) from None


def check_sources(script: str, checkpoint: str | None, calibration_folder: str | None) -> None:
    """A missing script, checkpoint or calibration folder fails before torch loads, with the error of its kind."""
    if not os.path.isfile(script):
        raise ScriptError(f"{script}: no such model script")
    if checkpoint is not None and not os.path.exists(checkpoint):
        raise CheckpointError(f"{checkpoint}: no such checkpoint")
    if calibration_folder is not None and not os.path.isdir(calibration_folder):
        raise CalibrationError(f"{calibration_folder}: no such calibration folder")


def _check_inputs(job: Job) -> None:
    """Missing inputs fail before torch does any work, each with the error of its kind."""
    check_sources(job.script, job.checkpoint, job.calibration_folder)
    for path in (job.output, job.report_path):
        if path is None:
            continue
        folder = os.path.dirname(os.path.abspath(path))
        if not os.path.isdir(folder):
            raise ConfigError(f"{path}: the folder {folder} does not exist")
        for what, source in (("model script", job.script), ("checkpoint", job.checkpoint)):
            if source is not None and os.path.exists(path) and os.path.samefile(path, source):
                raise ConfigError(f"{path}: is the {what}; refusing to overwrite it, choose another output file")
