"""The window's workflow: load → preview calibration → quantize → save, driven by the runner's signals.

Everything slow goes to the runner as a :class:`~mono_quant_gui.run.worker.Task`
built from a plain function in :mod:`mono_quant_gui.run.tasks`; the handlers here
run on the GUI thread when the task's signal arrives.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mono_quant_core.errors import ConfigError
from mono_quant_core.progress import RunPlan
from mono_quant_core.report import format_db
from mono_quant_gui.modules import precision
from mono_quant_gui.queue.from_checkpoints import checkpoint_stem, output_folder
from mono_quant_gui.run import tasks
from mono_quant_gui.run.worker import Task
from mono_quant_gui.window import dialogs
from mono_quant_gui.window.formatting import format_bytes

if TYPE_CHECKING:
    from mono_quant_gui.window.main_window import MainWindow

log = logging.getLogger("mono_quant_gui")


class Running:
    """Load → preview → quantize → save on the window's runner, and what the window shows of it."""

    def __init__(self, window: MainWindow) -> None:
        self.w = window
        #: The task metric the loaded model's script defines (its function's name; None: none).
        self.loaded_metric: str | None = None

    # -- background tasks -------------------------------------------------------------------------
    def load_model(self) -> None:
        s = self.w.session
        if s.script is None:
            return
        title = f"Loading {Path(s.script).name}" + (f" with {Path(s.checkpoint).name}" if s.checkpoint else "")
        self.w.runner.submit(
            Task(
                "load",
                title,
                partial(
                    tasks.load_model_task,
                    script=s.script,
                    checkpoint=s.checkpoint,
                    entry=s.entry,
                    entry_kwargs=s.entry_kwargs,
                    select=s.job.config if s.job is not None and s.job_chosen is None else None,
                    metric=s.metric,
                ),
                on_done=self._done(self._loaded, settle=True),
                on_error=self._failed("Could not load the model", self._load_failed),
                on_cancel=self._stopped(self._back_to_loaded),
            )
        )

    def preview_calibration(self) -> None:
        s = self.w.session
        if not s.calibration:
            return
        samples = self.w.settings_panel.values()["samples"] or None
        self.w.runner.submit(
            Task(
                "preview",
                f"Previewing {Path(s.calibration).name}",
                partial(tasks.preview_task, folder=s.calibration, model=s.model, samples=samples),
                on_done=self._done(self._previewed),
                on_error=self._failed("Calibration folder", self._preview_failed),
                on_cancel=self._stopped(),
            )
        )

    def start_quantize(self) -> None:
        """Quantize the ticked layers with the panel's settings (one run at a time)."""
        if not self.w.commands.quantize.isEnabled():
            return
        try:
            config = self.current_config()
        except ConfigError as exc:
            dialogs.show_error(self.w, "Settings", str(exc))
            return
        s = self.w.session
        s.result = None
        s.report = None  # the dashboard shows this run now: nothing to export until it ends
        self.w.file_label.setText("")
        self.w.run_list.refresh()
        samples = self.current_samples()
        self.w.modules.model.clear_results()
        original = s.rows[0].bytes if s.rows else 0
        self.w.dashboard.begin_run(
            config.layers or [], original, config.needs_calibration, config.warn_layer_sqnr_db, self.loaded_metric
        )
        log.info(
            "quantizing %d layers: %s %s, %s, %s",
            len(config.layers or []),
            config.dtype,
            config.mode,
            config.scheme,
            config.granularity,
        )
        task = self.w.runner.submit(
            Task(
                "quantize",
                "Quantizing",
                partial(
                    tasks.quantize_task,
                    model=s.model,
                    config=config,
                    folder=s.calibration,
                    samples=samples,
                    seed=s.seed,
                    skip_unusable=self.w.calibration_panel.skip_unusable(),  # recorded in the report
                    script=s.loaded.source.get("script_path") or s.script,
                    metric=s.metric,
                ),
                on_done=self._done(self._quantized),
                on_cancel=self._stopped(lambda: self.w.dashboard.stopped("cancelled")),
            )
        )
        task.on_error = self._failed("Quantization failed", lambda message: self._quantize_failed(task))

    def current_config(self) -> Any:
        """The QuantConfig a run would use now: the session's whole config with the widgets' values
        and the ticked layers (a job's own layer rules while its choice is unchanged)."""
        s = self.w.session
        ticked = self.w.modules.model.checked_names()
        return self.w.settings_panel.config(s.layers(ticked))

    def show_precisions(self) -> None:
        """The tree's Precision column from the session's config (after a load or an edit of the settings)."""
        self.w.modules.set_precisions(self.w.session.config)

    def set_layer_precision(self, names: list[str], chosen: str | None) -> None:
        """The tree's Precision menu: exact-name ``layer_overrides`` for ``names`` (None: their entries
        removed), through the settings panel like any edit; what the engine refuses is said in the status bar."""
        panel, s = self.w.settings_panel, self.w.session
        try:
            config = precision.with_precision(panel.config(s.config.layers), names, chosen)
        except ConfigError as exc:
            self.w.statusBar().showMessage(f"Precision not changed: {exc}")
            return
        panel.set_config(config, panel.values()["samples"] or None)
        what = names[0] if len(names) == 1 else f"{len(names)} layers"
        self.w.statusBar().showMessage(f"{what}: {chosen or 'precision from Settings'}")

    def current_samples(self) -> int | None:
        return (self.w.settings_panel.values()["samples"] or None) if self.w.session.calibration else None

    def cancel(self) -> None:
        if self.w.runner.current is not None:
            self.w.statusBar().showMessage("Cancelling…")
            self.w.runner.cancel()

    def save_as(self) -> None:
        """Ask for a path, confirm overwriting, and save the result on screen in the background."""
        self.save_result(self.w.session.result)

    def save_result(self, result: Any) -> None:
        """Ask for a path, confirm overwriting, and save ``result`` (any run of this model) in the background."""
        if result is None or self.w.runner.busy:
            return
        path, chosen = dialogs.ask_save_path(self.w, self.suggested_save_path(result))
        if not path:
            return
        path = dialogs.with_extension(path, chosen)
        if os.path.exists(path) and not dialogs.confirm_overwrite(self.w, path):
            return
        self.w.store.set_save_folder(path)
        # The save claims ``path`` while it writes: a queue job writing the same file makes it fail
        # with a dialog naming the job, and the queue refuses that file while the save runs.
        self.w.runner.submit(
            Task(
                "save",
                f"Saving {Path(path).name}",
                partial(tasks.save_task, result=result, path=path, writer="Save As"),
                on_done=self._done(partial(self._saved, result)),
                on_error=self._failed("Could not save"),
                on_cancel=self._stopped(),
            )
        )

    def suggested_save_path(self, result: Any = None) -> str:
        """``<checkpoint stem>.<dtype>.safetensors`` in the folder the last Save As wrote to, else
        next to the checkpoint (or script) when that folder is the user's and writable, else in
        Documents -- never the calibration folder, whose files would become samples.  ``result``:
        the run to save (default: the one on screen)."""
        s = self.w.session
        result = result if result is not None else s.result
        script, checkpoint = s.shown_inputs()  # the model the result came from
        source = checkpoint or script or "model"
        try:
            stem = checkpoint_stem(source) if checkpoint else Path(source).stem
        except ConfigError:
            stem = Path(source).stem
        folder = self.w.store.save_folder() or output_folder(source)
        return os.path.join(folder, f"{stem}.{result.config.dtype}.safetensors")

    # -- runner signals ---------------------------------------------------------------------------
    def task_started(self, task: Task) -> None:
        self.w.run_status.begin()
        self.w.statusBar().showMessage(f"{task.title}…")

    def task_progress(self, done: int, total: int, message: str) -> None:
        self.w.run_status.update_progress(done, total)
        self.w.statusBar().showMessage(message)

    def task_phase(self, task: Task, item: Any) -> None:
        """The engine's plan and phase steps: the ETA, and the calibration card while it runs."""
        if isinstance(item, RunPlan):
            task.info["plan"] = item
            self.w.run_status.set_plan(item)
            return
        self.w.run_status.update_phase(item)
        if item.done == 0 and item.message:  # each phase's start always arrives: say what it does
            self.w.statusBar().showMessage(item.message)
        if item.phase == "calibrate" and item.total and task.kind == "quantize":
            self.w.dashboard.set_calibration(min(item.done, item.total), item.total)

    def layer_done(self, layer: Any) -> None:
        self.w._layer_batch.append(layer)
        if not self.w._layer_timer.isActive():
            self.w._layer_timer.start()

    def flush_layers(self) -> None:
        """Draw the layers that arrived since the last flush (one redraw per batch)."""
        self.w._layer_timer.stop()
        batch, self.w._layer_batch = self.w._layer_batch, []
        if batch:
            task = self.w.runner.current
            plan = task.info.get("plan") if task is not None else None
            n = plan.units("calibrate") if isinstance(plan, RunPlan) else 0
            if n and not self.w.dashboard.sqnr_plot.bar_count():
                self.w.dashboard.set_calibration(n, n)  # layers come after calibration
            self.w.dashboard.add_layers(batch)
            self.w.modules.model.set_layer_results(batch)

    def task_finished(self, result: Any) -> None:
        self.w.run_status.end()

    def task_errored(self, message: str, details: str) -> None:
        self.w.run_status.end()
        self.flush_layers()

    def task_cancelled(self) -> None:
        self.w.run_status.end()
        self.flush_layers()

    # -- each task's handlers (the task carries them: see worker.Task) ----------------------------
    def _done(self, handle: Callable[[Any], None], settle: bool = False) -> Callable[[Any], None]:
        """``handle(result)``, then the actions' state; ``settle``: give a model load's pages back."""

        def done(result: Any) -> None:
            handle(result)
            self.update_actions()
            if settle:
                tasks.settle_memory()  # here, on the GUI thread (see its docstring)

        return done

    def _failed(self, title: str, handle: Callable[[str], None] | None = None) -> Callable[[str, str], None]:
        """The error dialog titled ``title`` after ``handle(message)`` put the window right."""

        def failed(message: str, details: str) -> None:
            if handle is not None:
                handle(message)
            self.w.statusBar().showMessage(f"{title}: {message.splitlines()[0]}")
            self.w.last_error = dialogs.show_error(self.w, title, message, details)
            self.update_actions()

        return failed

    def _stopped(self, handle: Callable[[], None] | None = None) -> Callable[[], None]:
        def stopped() -> None:
            if handle is not None:
                handle()
            self.w.statusBar().showMessage("Stopped: cancelled")
            self.update_actions()

        return stopped

    def _load_failed(self, message: str) -> None:
        self._back_to_loaded()

    def _preview_failed(self, message: str) -> None:
        self.w.calibration_panel.show_error(message)

    def _quantize_failed(self, task: Task) -> None:
        report = task.info.get("report")
        if report is not None:
            self.w.session.report = report
            self._show_report(report)  # the dashboard still shows what was measured
        else:
            self.w.dashboard.stopped("failed")

    # -- outcomes ---------------------------------------------------------------------------------
    def _loaded(self, outcome: tasks.LoadOutcome) -> None:
        s = self.w.session
        if (outcome.script, outcome.checkpoint) != (s.script, s.checkpoint):
            return  # another script or checkpoint was opened while this one loaded
        if outcome.candidates:
            entry = dialogs.choose_entry(self.w, outcome.script, outcome.candidates)
            if entry is None:
                self._back_to_loaded()
                self.w.statusBar().showMessage("Loading stopped: no model chosen")
                return
            s.entry = entry
            self.load_model()
            return
        if outcome.quantized_message is not None and outcome.checkpoint is not None:
            if dialogs.confirm_open_quantized(self.w, outcome.quantized_message):
                self.open_quantized_file(outcome.checkpoint, outcome.script)
            else:
                self._back_to_loaded()
                self.w.statusBar().showMessage(f"{Path(outcome.checkpoint).name} is a quantized model: not loaded")
            return
        if outcome.result is not None:
            self._opened_quantized(outcome)
            return
        keys = outcome.loaded.keys
        if not keys.ok and not dialogs.confirm_key_mismatch(
            self.w, f"{keys.checkpoint} does not match the model in {Path(outcome.script).name}.", keys.summary()
        ):
            log.warning("loading stopped: %s does not match the model", keys.checkpoint)
            self._back_to_loaded()
            self.w.statusBar().showMessage("Loading stopped: the checkpoint does not match the model")
            return
        self.clear_results()  # another model (or the same one again): no figures of the last one
        s.loaded, s.rows, s.runs = outcome.loaded, outcome.rows, []
        self.w.run_list.refresh()
        s.loaded_inputs = s.inputs()
        self.w.store.add_recent_model(outcome.script, outcome.checkpoint)
        self.w.rebuild_recent_menu()
        self.w.modules.set_rows(outcome.rows or [])
        if outcome.devices is not None:
            self.w.settings_panel.set_devices(outcome.devices)
        self.loaded_metric = outcome.metric
        self.w.settings_panel.set_metric(
            None
            if outcome.metric
            else f"{Path(outcome.script).name} defines no {s.metric or tasks.DEFAULT_METRIC}(model)"
        )
        self.show_precisions()
        if outcome.chosen is not None:
            self.w.modules.model.set_checked_names(outcome.chosen)
        if outcome.chosen is not None:
            s.job_chosen = list(outcome.chosen)  # a job's rules tick the tree once, not on every later load
        elif s.job is not None and s.job_chosen is None:
            s.job = None
        log.info(
            "loaded %s: %d modules, %d quantizable; %s",
            outcome.loaded.source.get("entry"),
            len(outcome.rows or []),
            len(self.w.modules.model.quantizable_names()),
            keys.summary().replace("\n", "; "),
        )
        self.w.statusBar().showMessage(f"Loaded {Path(outcome.script).name}: {len(outcome.rows or [])} modules")
        self.w.file_label.setText("")
        self.update_title()
        self.show_empty_hints()
        if s.calibration:
            self.preview_calibration()  # dry-run the first sample through the new model

    def _previewed(self, preview: Any) -> None:
        current = self.w.session.calibration
        if current is None or Path(preview.folder).resolve() != Path(current).resolve():
            return  # the folder changed while this preview ran
        self.w.calibration_panel.show_preview(preview)
        self.w.store.add_recent("calibration", preview.folder)
        self.w.rebuild_recent_menu()
        for problem in preview.errors:
            log.warning("calibration: %s", problem)
        verdict = (
            "dry run failed"
            if preview.dry_run_error
            else ("dry run ok" if preview.dry_run_structure else "open a model to dry-run it")
        )
        self.w.statusBar().showMessage(
            f"Calibration folder {Path(preview.folder).name}: {preview.selected} files, {verdict}"
        )

    def _quantized(self, result: Any) -> None:
        self.flush_layers()
        self.w.session.result = result
        self.w.session.report = result.report
        self.w.session.runs.append(result)
        self.w.run_list.refresh()
        self._show_report(result.report)
        r = result.report
        self.w.statusBar().showMessage(
            f"Done in {r.elapsed_s:.1f} s: output SQNR {format_db(r.output_sqnr_db)}, "
            f"{format_bytes(r.original_bytes)} → {format_bytes(r.quantized_bytes)}.{target_verdict(r)} "
            "Save it with Ctrl+S."
        )
        for warning in r.warnings:
            log.warning("%s", warning)
        log.info(
            "done: output SQNR %s, %d layers quantized, %d kept in float",
            format_db(r.output_sqnr_db),
            len(r.layers),
            len(r.skipped),
        )

    def show_run(self, result: Any) -> None:
        """Put the finished run ``result`` (one of ``session.runs``) on the dashboard and in the tree;
        it becomes the result Save As saves."""
        s = self.w.session
        report = result.report
        s.result, s.report = result, report
        self.w.modules.model.clear_results()
        self.w.dashboard.begin_run(
            [layer.name for layer in report.layers],
            report.original_bytes,
            result.config.needs_calibration,
            result.config.warn_layer_sqnr_db,
        )
        self._show_report(report)
        if report.file_bytes:
            self.w.dashboard.set_file_size(report.file_bytes)
        self.update_actions()

    def _show_report(self, report: Any) -> None:
        self.w.dashboard.finish(report)
        self.w.modules.model.set_layer_results(report.layers)
        self.w.modules.model.set_skipped(report.skipped)
        self.w.modules.model.set_kept(report.kept_for_accuracy)
        self.w.modules.reveal([entry["name"] for entry in report.kept_for_accuracy])
        self.w.histograms.refresh()  # the selected layer's clipping range and grid are this run's

    def _saved(self, result: Any, outcome: tasks.SaveOutcome) -> None:
        if result is self.w.session.result:  # a run the Runs pane saved need not be the one on screen
            self.w.dashboard.set_file_size(outcome.bytes)
            self.w.file_label.setText(f"Saved {outcome.path} ({format_bytes(outcome.bytes)})")
        self.w.run_list.saved(result, outcome.path)
        self.w.statusBar().showMessage(f"Saved {Path(outcome.path).name}: {format_bytes(outcome.bytes)}")
        log.info("saved %s (%s)", outcome.path, format_bytes(outcome.bytes))

    def open_quantized_file(self, path: str, script: str | None = None) -> None:
        """Open the mono-quant output ``path`` (with ``script``, the model script on screen, or the
        script the file names when it lies beside it) as a finished run."""
        s = self.w.session
        script = script or s.script or tasks.script_beside(path)
        if script is None:
            script = dialogs.ask_open_script(self.w, str(Path(path).parent))
            if not script:
                return
        s.script, s.checkpoint = str(script), str(path)
        self.w.opening.remember_folder(script)
        self.w.runner.submit(
            Task(
                "load",
                f"Opening {Path(path).name}",
                partial(
                    tasks.open_quantized_task,
                    script=str(script),
                    path=str(path),
                    entry=s.entry,
                    entry_kwargs=s.entry_kwargs,
                ),
                on_done=self._done(self._loaded, settle=True),
                on_error=self._failed("Could not open the quantized model", self._load_failed),
                on_cancel=self._stopped(self._back_to_loaded),
            )
        )

    def _opened_quantized(self, outcome: tasks.LoadOutcome) -> None:
        """A quantized model on screen: its tree with the layers' results, the dashboard of its run."""
        s = self.w.session
        self.clear_results()
        s.loaded, s.rows, s.runs = outcome.loaded, outcome.rows, []
        self.w.run_list.refresh()
        s.loaded_inputs = s.inputs()
        result = outcome.result
        self.w.modules.set_rows(outcome.rows or [])
        self.loaded_metric = None
        report = result.report
        self.w.dashboard.begin_run(
            [layer.name for layer in report.layers],
            report.original_bytes,
            result.config.needs_calibration,
            result.config.warn_layer_sqnr_db,
        )
        s.result = result
        s.report = report
        s.config = result.config
        self.w.settings_panel.set_config(result.config)  # the settings the file was made with
        self.show_precisions()
        self._show_report(report)
        self.w.dashboard.set_file_size(report.file_bytes or 0)
        log.info("opened the quantized model %s: %d quantized layers", outcome.checkpoint, len(report.layers))
        kind = f"{result.config.dtype} {result.config.mode}"
        self.w.statusBar().showMessage(f"Opened {Path(outcome.checkpoint or '').name}: a quantized model ({kind})")
        self.update_title()
        self.update_actions()
        if s.calibration:
            self.preview_calibration()  # the samples run through the quantized model

    def _back_to_loaded(self) -> None:
        """A load failed or was stopped: the window shows exactly the last model that loaded."""
        self.w.session.back_to_loaded()
        self.update_title()
        self.update_actions()

    def clear_results(self) -> None:
        """The inputs changed: no result, no figures, nothing to save."""
        s = self.w.session
        s.result = None
        s.report = None
        self.w.file_label.setText("")
        self.w.modules.model.clear_results()
        self.w.analyzing.clear()
        self.w.dashboard.clear()
        self.w.histograms.clear()
        self.show_empty_hints(force=True)
        self.update_actions()

    # -- state of the window ------------------------------------------------------------------------
    def quantize_problem(self) -> str | None:
        """Why Quantize is unavailable right now (None: it is available)."""
        if self.w.session.loaded is None:
            return "Open a model script first (Ctrl+O)"
        if isinstance(self.w.session.loaded, tasks.OpenedQuantized):
            return "This model is quantized already: open its float checkpoint to quantize it again"
        if self.w.runner.busy:
            return "Wait for the running task to finish (or cancel it with Esc)"
        if not self.w.modules.model.checked_names():
            return "Tick at least one layer in the module tree"
        problem = self.w.settings_panel.problem()
        if problem is not None:
            return problem
        # Static mode calibrates on the folder and every mode validates on it: unusable files
        # stop the run here, before any work, unless the user chose to skip them.
        return self.w.calibration_panel.problem(bool(self.w.session.calibration))

    def update_actions(self) -> None:
        a = self.w.commands
        problem = self.quantize_problem()
        a.quantize.setEnabled(problem is None)
        a.quantize.setToolTip(problem or "Quantize the ticked layers with these settings (Ctrl+R)")
        self.w.analyzing.update_action()
        a.cancel.setEnabled(self.w.runner.current is not None)
        a.save_as.setEnabled(self.w.session.result is not None and not self.w.runner.busy)
        a.export_layers.setEnabled(self.w.session.report is not None)
        queue_problem = self.w.queueing.queue_problem()
        a.add_to_queue.setEnabled(queue_problem is None)
        a.add_to_queue.setToolTip(
            queue_problem
            or "Queue a job with these settings and the ticked layers; the "
            "Queue pane runs it in the background (Ctrl+Shift+R)"
        )
        self.w.queue_panel.add_current.setEnabled(queue_problem is None)
        self.w.queue_panel.add_current.setToolTip(
            queue_problem
            or "Queue a job with the open model, checkpoint, calibration folder, ticked layers and settings"
        )

    def update_title(self) -> None:
        parts = [Path(p).name for p in self.w.session.shown_inputs() if p]
        self.w.setWindowTitle(" · ".join([*parts, "mono-quant"]) if parts else "mono-quant")

    def show_empty_hints(self, force: bool = False) -> None:
        """The welcome page without a model; the "ready" hint with one and no result (``force``:
        also when the dashboard shows a run)."""
        a = self.w.commands
        if self.w.session.loaded is None:
            self.w.modules.show_hint(
                "No model",
                "The model's layers are listed here once its script is open: "
                "drop it on the window or use Open Script (Ctrl+O).",
            )
            self.w.dashboard.setCurrentWidget(self.w.welcome)
        elif self.w.session.result is None and (
            force or self.w.dashboard.currentWidget() in (self.w.dashboard.hint, self.w.welcome)
        ):
            self.w.dashboard.show_hint(
                "Ready to quantize",
                "Tick the layers in the module tree, pick the settings on the right and press Quantize (Ctrl+R).",
                [a.quantize],
            )

    def reveal_layer(self, name: str) -> None:
        """Select ``name`` in the module tree (from a click on its bar)."""
        if self.w.modules.select_layer(name):
            self.w.module_dock.show()
            self.w.module_dock.raise_()


def target_verdict(report: Any) -> str:
    """`` Target reached …`` after an automatic run; the report's warning when it was not; "" without a target."""
    target = report.accuracy_target
    if target is None:
        return ""
    if target.get("reached"):
        n = len(report.kept_for_accuracy)
        return f" Target reached with {n} layer{'s' if n != 1 else ''} kept float or widened."
    warning = next((w for w in report.warnings if w.startswith("target not reached")), "target not reached")
    return f" {warning[:1].upper()}{warning[1:]}."
