"""Opening things in the window: scripts, checkpoints, calibration folders, demos, job files, drops.

Each sets the session's inputs and asks :class:`~mono_quant_gui.run.workflow.WorkflowMixin`
to load or preview in the background.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mono_quant_core.errors import ConfigError
from mono_quant_gui.demo import demo
from mono_quant_gui.window import dialogs
from mono_quant_gui.window.drop import sort_drop

if TYPE_CHECKING:
    from mono_quant_gui.window.main_window import MainWindow

log = logging.getLogger("mono_quant_gui")


class Opening:
    """What opening does: sets the session's inputs and asks :class:`~mono_quant_gui.run.workflow.Running`
    to load or preview in the background."""

    def __init__(self, window: MainWindow) -> None:
        self.w = window

    # -- opening ------------------------------------------------------------------------------
    def choose_script(self) -> None:
        path = dialogs.ask_open_script(self.w, self.w.store.last_folder())
        if path:
            self.open_script(path)

    def choose_checkpoint(self) -> None:
        path = dialogs.ask_open_checkpoint(self.w, self.w.store.last_folder())
        if path:
            self.open_checkpoint(path)

    def choose_quantized(self) -> None:
        path = dialogs.ask_open_quantized(self.w, self.w.store.last_folder())
        if path:
            self.remember_folder(path)
            self.w.running.open_quantized_file(path)

    def choose_calibration_folder(self) -> None:
        path = dialogs.ask_calibration_folder(self.w, self.w.session.calibration or self.w.store.last_folder())
        if path:
            self.set_calibration_folder(path)

    def open_script(
        self,
        path: str,
        checkpoint: str | None = None,
        entry: str | None = None,
        entry_kwargs: dict | None = None,
        job: Any = None,
    ) -> None:
        """Use ``path`` as the model script and load it in the background: with ``checkpoint``
        when given, else with the checkpoint :meth:`Session.checkpoint_for_script` says.

        ``job``: the Job the window is filled from; its layer rules tick the tree once loaded.
        """
        s = self.w.session
        if checkpoint is None:
            checkpoint = s.checkpoint_for_script(str(path))
        s.script, s.checkpoint, s.entry, s.entry_kwargs = str(path), checkpoint, entry, entry_kwargs
        s.job, s.job_chosen = job, None
        self.remember_folder(path)  # Recent lists the model once it has loaded
        self.w.running.load_model()

    def open_checkpoint(self, path: str) -> None:
        """Load ``path`` into the current script's model (or keep it for the next script)."""
        self.w.session.checkpoint = str(path)
        self.remember_folder(path)
        if self.w.session.script:
            self.w.running.load_model()
        else:
            self.w.statusBar().showMessage(f"Checkpoint {Path(path).name} set: now open the model script (Ctrl+O)")
            self.w.running.update_title()

    def open_demo(self, key: str = "cnn") -> None:
        """Open a bundled example: its script, checkpoint and calibration folder."""
        example = demo(key)
        log.info("opening the demo: %s", example.title)
        self.open_script(str(example.script), str(example.checkpoint))
        self.set_calibration_folder(str(example.calibration))

    def set_calibration_folder(self, folder: str | None) -> None:
        """Use ``folder`` for calibration (None: no calibration) and preview it in the background."""
        new = str(folder) if folder else None
        if new != self.w.session.calibration:
            self.w.running.clear_results()  # the last run used other samples
        self.w.session.calibration = new
        self.w.calibration_panel.set_folder(self.w.session.calibration)
        self.w.settings_panel.set_calibration_available(folder is not None)
        if folder:
            self.remember_folder(folder)  # Recent lists it once its preview has read it
            if not self.w.runner.has("load"):  # otherwise the load's end previews it with the model
                self.w.running.preview_calibration()
        self.w.running.update_actions()

    def route_drop(self, paths: list[str], into_queue: bool = False) -> None:
        """The one drop router: paths dropped anywhere on the window (``into_queue``: on the Queue
        pane, which only reports them), sorted by what they are and sent where they belong."""
        if into_queue:
            self.handle_queue_drop(paths)
        else:
            self.handle_paths(paths)

    def handle_paths(self, paths: list[str]) -> None:
        """Dropped or command-line paths (several kinds at once is fine).

        A script, a checkpoint and a folder open in the window.  Several
        checkpoints at once are queued, one job each with the current settings
        (the first one also opens when a script comes with them).  Job files are
        queued; a single one also fills the window with its settings.
        """
        groups = sort_drop(paths)
        for path in groups.get("unknown", []):
            self.w.statusBar().showMessage(f"{Path(path).name}: not a model script, checkpoint, folder or job file")
            log.warning(
                "ignored %s: not a model script (.py), checkpoint, calibration folder or job file (.toml)", path
            )
        checkpoints = groups.get("checkpoint", [])
        scripts = groups.get("script", [])
        if len(checkpoints) > 1:
            self.w.queueing.queue_checkpoints(checkpoints, scripts[0] if scripts else None)
        if scripts:
            self.open_script(scripts[0], checkpoints[0] if checkpoints else None)
        elif len(checkpoints) == 1:
            self.open_checkpoint(checkpoints[0])
        # After the model: with a load pending, the folder is previewed once, with the new model.
        if "calibration" in groups:
            self.set_calibration_folder(groups["calibration"][0])
        jobs = groups.get("job", [])
        if jobs:
            self.w.queueing.import_job_files(jobs)
            if len(jobs) == 1 and not scripts:
                self.open_job(jobs[0])

    def handle_queue_drop(self, paths: list[str]) -> None:
        """Paths dropped on the Queue pane: checkpoints (even one) and job files are queued;
        a script or folder dropped with them opens in the window as usual."""
        groups = sort_drop(paths)
        checkpoints, jobs = groups.pop("checkpoint", []), groups.pop("job", [])
        scripts = groups.get("script", [])
        if checkpoints:
            self.w.queueing.queue_checkpoints(checkpoints, scripts[0] if scripts else None)
        if jobs:
            self.w.queueing.import_job_files(jobs)
        if scripts:
            self.open_script(scripts[0], checkpoints[0] if checkpoints else None)
            del groups["script"]
        rest = [p for kind in groups.values() for p in kind]
        if rest:
            self.handle_paths(rest)

    def open_job(self, path: str) -> None:
        """Fill the window from a job file: model, checkpoint, calibration, settings and layers."""
        from mono_quant_core.jobs import load_job

        try:
            job = load_job(path)
        except ConfigError as exc:
            self.w.last_error = dialogs.show_error(self.w, "Could not open the job", str(exc))
            log.error("%s", exc)
            return
        log.info("opened the job %s", path)
        self.w.session.metric = job.metric  # before the load, which looks for that metric
        self.open_script(job.script, job.checkpoint, job.entry, job.entry_kwargs or None, job)
        # After the model: the load previews the folder once, with the job's model; before
        # the settings, which offer static mode only once a folder is set.
        self.set_calibration_folder(job.calibration_folder)
        s = self.w.session
        s.samples, s.seed = job.samples, job.seed
        self.w.calibration_panel.skip.setChecked(job.skip_unusable)
        self.w.settings_panel.set_config(job.config, job.samples)  # the whole config, every field
        s.config = self.w.settings_panel.config(job.config.layers)

    def remember_folder(self, path: str) -> None:
        self.w.store.set_last_folder(str(path))
