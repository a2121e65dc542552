"""The main window's side of the batch queue: jobs built from what the window has open.

``Add to Queue`` (toolbar, Run menu, the Queue pane's *Add current settings*)
queues one job with the loaded model's script, entry, checkpoint, the
calibration folder, sample count, settings and ticked layers; several dropped
checkpoints become one job each with the same settings
(:meth:`~mono_quant_gui.queue.QueueDock.add_checkpoints`).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING

from mono_quant_core.errors import MonoQuantError
from mono_quant_core.jobs import Job
from mono_quant_gui.queue.from_checkpoints import checkpoint_stem, numbered_output, output_folder
from mono_quant_gui.run import tasks
from mono_quant_gui.window import dialogs

if TYPE_CHECKING:
    from mono_quant_gui.window.main_window import MainWindow

log = logging.getLogger("mono_quant_gui")


class Queueing:
    """Jobs for the Queue pane, built from what the window has open."""

    def __init__(self, window: MainWindow) -> None:
        self.w = window

    def queue_problem(self) -> str | None:
        """Why the window's current settings cannot be queued now (None: they can)."""
        if self.w.session.loaded is None:
            return "Open a model script first (Ctrl+O)"
        if isinstance(self.w.session.loaded, tasks.OpenedQuantized):
            return "This model is quantized already: open its float checkpoint to queue a run"
        if self.w.runner.has("load"):
            return "Wait for the model to finish loading"
        if not self.w.modules.model.checked_names():
            return "Tick at least one layer in the module tree"
        return self.w.settings_panel.problem()

    def current_job(self, output: str | None = None) -> Job:
        """The job the window would run now: the loaded model's inputs, the settings and the ticked layers.

        ``output`` defaults to ``<checkpoint stem>.<dtype>.safetensors`` next to the
        checkpoint (next to the script without one), numbered when the queue
        already writes that file or it exists.  Raises MonoQuantError.
        """
        s = self.w.session
        if s.loaded is None:
            raise MonoQuantError("no model is open: open a model script first")
        source = s.loaded.source
        config = self.w.running.current_config()
        script = source.get("script_path") or s.script
        if not script:
            raise MonoQuantError("the open model has no script: open its script first")
        checkpoint = source.get("checkpoint_path")
        calibration = s.calibration
        job = s.job if s.job_inputs_open() else None  # the job the window was filled from
        if output is None and job is not None and job.config.dtype == config.dtype:
            output = job.output
        if output is None:
            output = self.default_output(checkpoint or script, config.dtype, is_checkpoint=checkpoint is not None)
        return Job(
            script=script,
            entry=source.get("entry") or s.entry,
            entry_kwargs=dict(source.get("entry_kwargs") or s.entry_kwargs or {}),
            checkpoint=checkpoint,
            strict=bool(s.loaded.keys.ok) and (job.strict if job is not None else True),
            config=config,
            calibration_folder=calibration,
            samples=self.w.running.current_samples(),
            seed=s.seed if calibration else None,
            skip_unusable=bool(calibration) and self.w.calibration_panel.skip_unusable(),
            output=output,
            report_path=job.report_path if job is not None else None,
            metric=s.metric,
        )

    def default_output(self, source: str, dtype: str, is_checkpoint: bool = True) -> str:
        """``<stem>.<dtype>.safetensors`` in :func:`output_folder` of ``source``; ``-2``, ``-3``…
        when a queued job already writes that file or it exists."""
        stem = checkpoint_stem(source) if is_checkpoint else Path(source).stem
        taken = {e.job.output for e in self.w.queue_panel.model.entries()}
        return numbered_output(output_folder(source), stem, dtype, taken)

    def add_current_to_queue(self) -> list[str]:
        """Queue the current settings as one job (the toolbar's Add to Queue); returns its id."""
        problem = self.queue_problem()
        if problem is not None:
            self.w.statusBar().showMessage(f"Not queued: {problem}")
            return []
        try:
            job = self.current_job()
        except MonoQuantError as exc:
            self.w.last_error = dialogs.show_error(self.w, "Could not queue the job", str(exc))
            return []
        ids = self.w.queue_panel.add_jobs([job])
        if ids:
            log.info("queued %s → %s", Path(job.checkpoint or job.script).name, job.output)
            self.show_queue()
        return ids

    def queue_checkpoints(self, paths: list[str], script: str | None = None) -> list[str]:
        """One queued job per checkpoint with the current settings.

        With ``script`` (dropped together with the checkpoints) the jobs use that
        script and the layers the settings select; otherwise the loaded model's
        script and the ticked layers.
        """
        try:
            if script is not None:
                template = Job(
                    script=script,
                    config=self.w.settings_panel.config(None),
                    calibration_folder=self.w.session.calibration,
                    samples=(self.w.settings_panel.values()["samples"] or None) if self.w.session.calibration else None,
                    output=os.path.join(output_folder(script), "model.safetensors"),
                )
            else:
                problem = self.queue_problem()
                if problem is not None:
                    self.w.last_error = dialogs.show_error(
                        self.w,
                        "Could not queue the checkpoints",
                        f"{problem}: each checkpoint is queued with the open model's script, its ticked "
                        "layers and the current settings (or drop the script together with the checkpoints).",
                    )
                    return []
                template = self.current_job()
        except MonoQuantError as exc:
            self.w.last_error = dialogs.show_error(self.w, "Could not queue the checkpoints", str(exc))
            return []
        ids = self.w.queue_panel.add_checkpoints(paths, template)
        if ids:
            self.show_queue()
        return ids

    def import_job_files(self, paths: list[str]) -> list[str]:
        """Queue the jobs of these job files (unreadable ones are reported by the Queue pane)."""
        ids = self.w.queue_panel.import_files(paths)
        if ids:
            self.show_queue()
        return ids

    def show_queue(self) -> None:
        """Bring the Queue pane to the front."""
        self.w.queue_dock.show()
        self.w.queue_dock.raise_()
