"""The main window: toolbar, docks (modules, settings, calibration, log, queue), dashboard, status bar.

The window owns one :class:`~mono_quant_gui.run.worker.Runner`, the session
(:class:`~mono_quant_gui.state.session.Session`, the one Qt-free state) and three
controllers composed into it: :class:`~mono_quant_gui.window.opening.Opening` (what
opening does), :class:`~mono_quant_gui.run.workflow.Running` (load, preview,
quantize, save and what the window shows of them) and
:class:`~mono_quant_gui.queue.queueing.Queueing` (jobs for the Queue pane).  The
window's public verbs below hand over to them.  The Queue pane
(:class:`~mono_quant_gui.queue.QueueDock`) runs its jobs on its own thread.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

from PySide6.QtCore import QEvent, QObject, Qt, QTimer, QUrl
from PySide6.QtGui import QAction, QCloseEvent, QDesktopServices
from PySide6.QtWidgets import QApplication, QDockWidget, QLabel, QMainWindow, QMessageBox, QScrollArea, QWidget

from mono_quant_core.errors import ConfigError

if TYPE_CHECKING:
    from mono_quant_core.jobs import Job

from mono_quant_gui import identity
from mono_quant_gui.app import install_garbage_collector
from mono_quant_gui.calibration.calibration_panel import CalibrationPanel
from mono_quant_gui.dashboard.dashboard import Dashboard
from mono_quant_gui.dashboard.histogram_control import Histograms
from mono_quant_gui.dashboard.sensitivity_view import SensitivityView
from mono_quant_gui.modules.module_panel import ModulePanel
from mono_quant_gui.queue import QueueDock, QueueStore
from mono_quant_gui.queue.queueing import Queueing
from mono_quant_gui.queue.target import QueueTarget
from mono_quant_gui.run.analyzing import Analyzing
from mono_quant_gui.run.run_status import RunStatus
from mono_quant_gui.run.worker import Runner
from mono_quant_gui.run.workflow import Running
from mono_quant_gui.runs.run_list import RunList
from mono_quant_gui.runs.runs_dock import RunsPanel
from mono_quant_gui.settings.settings_panel import SettingsPanel
from mono_quant_gui.settings.settings_store import STATE_VERSION, SettingsStore
from mono_quant_gui.state.session import Session
from mono_quant_gui.window import dialogs, help_menu
from mono_quant_gui.window.actions import Actions
from mono_quant_gui.window.drop import local_paths
from mono_quant_gui.window.export_actions import Exporting
from mono_quant_gui.window.layer_export import export_layer_table
from mono_quant_gui.window.log_view import LogView
from mono_quant_gui.window.opening import Opening
from mono_quant_gui.window.preferences import PreferencesDialog
from mono_quant_gui.window.welcome import WelcomePage

DEFAULT_SIZE = (1400, 900)


def recent_label(path: str, checkpoint: str | None = None) -> str:
    """``model.py + model.safetensors — cnn``: the names, and the folder that tells alike names apart."""
    p = Path(path)
    name = p.name if checkpoint is None else f"{p.name} + {Path(checkpoint).name}"
    return f"{name} — {p.parent.name}" if p.parent.name else name


#: Layer results arriving faster than this are drawn together.
LAYER_FLUSH_MS = 50
#: The Samples box previews the folder again once edits pause this long.
PREVIEW_DELAY_MS = 300


class MainWindow(QMainWindow):
    """The application window; ``runner`` does the background work one task at a time.

    ``queue_store``: where the Queue pane keeps its jobs (default: queue.json in
    the user's data folder).
    """

    def __init__(self, parent: QWidget | None = None, queue_store: QueueStore | None = None):
        super().__init__(parent)
        self.setObjectName("main_window")
        self.setWindowIcon(identity.app_icon())
        self.setDockNestingEnabled(True)
        # Settings and calibration take the whole right side; the log and queue sit under the rest.
        self.setCorner(Qt.Corner.BottomRightCorner, Qt.DockWidgetArea.RightDockWidgetArea)
        self.setAcceptDrops(True)
        self.store = SettingsStore()
        self.session = Session()
        self.runner = Runner(self)
        self.opening = Opening(self)
        self.running = Running(self)
        self.queueing = Queueing(self)
        self.analyzing = Analyzing(self)
        self.histograms = Histograms(self)
        self.run_list = RunList(self)
        self.commands = Actions(self)
        self._build_panes(queue_store)
        self.commands.build_toolbar(self)
        self.commands.build_menus(self, [d.toggleViewAction() for d in self.docks])
        self.exporting = Exporting(self)
        self.exporting.install(self.commands.file_menu, self.commands.export_anchor)
        self._build_status_bar()
        self._default_state = self.saveState(STATE_VERSION)
        self._layer_batch: list = []
        self._layer_timer = QTimer(self, singleShot=True, interval=LAYER_FLUSH_MS)
        self._layer_timer.timeout.connect(self.flush_layers)
        # Samples edited step by step (spin box arrows, typing) preview once, when the edits pause.
        self._preview_timer = QTimer(self, singleShot=True, interval=PREVIEW_DELAY_MS)
        self._preview_timer.timeout.connect(self._preview_after_edit)
        self._connect()
        self._restore()
        self.update_title()
        self.show_empty_hints()
        self.update_actions()
        QApplication.instance().installEventFilter(self)
        install_garbage_collector()  # garbage is collected on the GUI thread only

    # -- building -------------------------------------------------------------------------
    def _dock(self, title: str, name: str, widget: QWidget, area: Qt.DockWidgetArea) -> QDockWidget:
        dock = QDockWidget(title, self)
        dock.setObjectName(name)
        dock.setWidget(widget)
        dock.setFeatures(
            QDockWidget.DockWidgetFeature.DockWidgetMovable
            | QDockWidget.DockWidgetFeature.DockWidgetClosable
            | QDockWidget.DockWidgetFeature.DockWidgetFloatable
        )
        self.addDockWidget(area, dock)
        self.docks.append(dock)
        return dock

    def _build_panes(self, queue_store: QueueStore | None) -> None:
        self.docks: list[QDockWidget] = []
        self.dashboard = Dashboard()
        self.welcome = WelcomePage(self.commands.open_script, self.commands.open_demo, self.commands.documentation)
        self.dashboard.addWidget(self.welcome)
        self.setCentralWidget(self.dashboard)
        self.modules = ModulePanel()
        self.module_dock = self._dock("Modules", "modules_dock", self.modules, Qt.DockWidgetArea.LeftDockWidgetArea)
        self.settings_panel = SettingsPanel()
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setFrameShape(QScrollArea.Shape.NoFrame)
        scroll.setWidget(self.settings_panel)
        self.settings_dock = self._dock("Settings", "settings_dock", scroll, Qt.DockWidgetArea.RightDockWidgetArea)
        self.calibration_panel = CalibrationPanel(self.commands.calibration)
        self.calibration_dock = self._dock(
            "Calibration", "calibration_dock", self.calibration_panel, Qt.DockWidgetArea.RightDockWidgetArea
        )
        self.splitDockWidget(self.settings_dock, self.calibration_dock, Qt.Orientation.Vertical)
        self.log_view = LogView()
        self.log_dock = self._dock("Log", "log_dock", self.log_view, Qt.DockWidgetArea.BottomDockWidgetArea)
        # The log first, so what the queue says while reading its file reaches it.
        self.log_view.attach("mono_quant_core", "mono_quant_gui")
        self.queue_panel = QueueDock(queue_store)
        self.queue_panel.set_target(self.store.queue_target())
        self.queue_dock = self._dock("Queue", "queue_dock", self.queue_panel, Qt.DockWidgetArea.BottomDockWidgetArea)
        self.tabifyDockWidget(self.log_dock, self.queue_dock)
        self.runs_panel = RunsPanel()
        self.runs_dock = self._dock("Runs", "runs_dock", self.runs_panel, Qt.DockWidgetArea.BottomDockWidgetArea)
        self.tabifyDockWidget(self.queue_dock, self.runs_dock)
        self.sensitivity_view = SensitivityView(self.commands.analyze_sensitivity)
        self.sensitivity_dock = self._dock(
            "Sensitivity", "sensitivity_dock", self.sensitivity_view, Qt.DockWidgetArea.BottomDockWidgetArea
        )
        self.tabifyDockWidget(self.runs_dock, self.sensitivity_dock)
        self.histogram_dock = self._dock(
            "Histogram", "histogram_dock", self.histograms.view, Qt.DockWidgetArea.BottomDockWidgetArea
        )
        self.tabifyDockWidget(self.runs_dock, self.histogram_dock)
        self.log_dock.raise_()
        self.resizeDocks([self.module_dock, self.settings_dock], [530, 350], Qt.Orientation.Horizontal)
        self.resizeDocks([self.log_dock], [170], Qt.Orientation.Vertical)
        self.resizeDocks([self.settings_dock, self.calibration_dock], [370, 480], Qt.Orientation.Vertical)

    def _build_status_bar(self) -> None:
        self.run_status = RunStatus()
        self.statusBar().addPermanentWidget(self.run_status)
        self.file_label = QLabel(objectName="saved_file")
        self.statusBar().addPermanentWidget(self.file_label)
        self.statusBar().showMessage("Ready")

    def _connect(self) -> None:
        a = self.commands
        a.open_script.triggered.connect(self.opening.choose_script)
        a.open_checkpoint.triggered.connect(self.opening.choose_checkpoint)
        a.open_quantized.triggered.connect(self.opening.choose_quantized)
        a.calibration.triggered.connect(self.opening.choose_calibration_folder)
        a.quantize.triggered.connect(self.running.start_quantize)
        a.cancel.triggered.connect(self.running.cancel)
        a.save_as.triggered.connect(self.running.save_as)
        a.export_layers.triggered.connect(lambda: export_layer_table(self))
        a.quit.triggered.connect(self.close)
        a.preferences.triggered.connect(self.show_preferences)
        a.clear_recent.triggered.connect(self.clear_recent)
        a.reset_layout.triggered.connect(lambda: self.restoreState(self._default_state, STATE_VERSION))
        a.about.triggered.connect(self.show_about)
        a.documentation.triggered.connect(self.open_documentation)
        a.add_to_queue.triggered.connect(self.add_current_to_queue)
        q = self.queue_panel
        q.add_current_requested.connect(self.add_current_to_queue)
        q.checkpoints_dropped.connect(self.queue_checkpoints)
        q.paths_dropped.connect(lambda paths: self.opening.route_drop(paths, into_queue=True))
        q.message.connect(self.statusBar().showMessage)
        q.preferences_requested.connect(self.show_preferences)
        a.open_demo.triggered.connect(lambda: self.open_demo("cnn"))
        for key, action in a.demos.items():
            action.triggered.connect(lambda _=False, k=key: self.open_demo(k))
        self.settings_panel.changed.connect(self._settings_changed)
        self.modules.checks_changed.connect(self.update_actions)
        self.modules.precision_chosen.connect(self.running.set_layer_precision)
        self.calibration_panel.clear_requested.connect(lambda: self.set_calibration_folder(None))
        self.calibration_panel.skip_changed.connect(lambda _skip: self.update_actions())
        self.dashboard.layer_clicked.connect(self.reveal_layer)
        r = self.runner
        r.started.connect(self.running.task_started)
        r.progress.connect(self.running.task_progress)
        r.layer_done.connect(self.running.layer_done)
        r.phase.connect(self.running.task_phase)
        r.finished.connect(self.running.task_finished)
        r.errored.connect(self.running.task_errored)
        r.cancelled.connect(self.running.task_cancelled)
        r.busy_changed.connect(lambda _busy: self.update_actions())
        self.run_list.connect()
        self.analyzing.connect()
        self.histograms.connect(self.histogram_dock)

    # -- the window's verbs (menus, drops, the command line and tests call these) ----------------
    def choose_script(self) -> None:
        """See :meth:`opening.Opening.choose_script`."""
        self.opening.choose_script()

    def choose_checkpoint(self) -> None:
        """See :meth:`opening.Opening.choose_checkpoint`."""
        self.opening.choose_checkpoint()

    def open_script(
        self,
        path: str,
        checkpoint: str | None = None,
        entry: str | None = None,
        entry_kwargs: dict | None = None,
        job: Any = None,
    ) -> None:
        """See :meth:`opening.Opening.open_script`."""
        self.opening.open_script(path, checkpoint, entry, entry_kwargs, job)

    def open_checkpoint(self, path: str) -> None:
        """See :meth:`opening.Opening.open_checkpoint`."""
        self.opening.open_checkpoint(path)

    def open_demo(self, key: str = "cnn") -> None:
        """See :meth:`opening.Opening.open_demo`."""
        self.opening.open_demo(key)

    def set_calibration_folder(self, folder: str | None) -> None:
        """See :meth:`opening.Opening.set_calibration_folder`."""
        self.opening.set_calibration_folder(folder)

    def handle_paths(self, paths: list[str]) -> None:
        """See :meth:`opening.Opening.handle_paths`."""
        self.opening.handle_paths(paths)

    def handle_queue_drop(self, paths: list[str]) -> None:
        """See :meth:`opening.Opening.handle_queue_drop`."""
        self.opening.handle_queue_drop(paths)

    def open_job(self, path: str) -> None:
        """See :meth:`opening.Opening.open_job`."""
        self.opening.open_job(path)

    def load_model(self) -> None:
        """See :meth:`workflow.Running.load_model`."""
        self.running.load_model()

    def preview_calibration(self) -> None:
        """See :meth:`workflow.Running.preview_calibration`."""
        self.running.preview_calibration()

    def start_quantize(self) -> None:
        """See :meth:`workflow.Running.start_quantize`."""
        self.running.start_quantize()

    def cancel(self) -> None:
        """See :meth:`workflow.Running.cancel`."""
        self.running.cancel()

    def save_as(self) -> None:
        """See :meth:`workflow.Running.save_as`."""
        self.running.save_as()

    def open_quantized_file(self, path: str, script: str | None = None) -> None:
        """See :meth:`workflow.Running.open_quantized_file`."""
        self.running.open_quantized_file(path, script)

    def quantize_problem(self) -> str | None:
        """See :meth:`workflow.Running.quantize_problem`."""
        return self.running.quantize_problem()

    def update_actions(self) -> None:
        """See :meth:`workflow.Running.update_actions`."""
        self.running.update_actions()

    def update_title(self) -> None:
        """See :meth:`workflow.Running.update_title`."""
        self.running.update_title()

    def show_empty_hints(self, force: bool = False) -> None:
        """See :meth:`workflow.Running.show_empty_hints`."""
        self.running.show_empty_hints(force)

    def flush_layers(self) -> None:
        """See :meth:`workflow.Running.flush_layers`."""
        self.running.flush_layers()

    def reveal_layer(self, name: str) -> None:
        """See :meth:`workflow.Running.reveal_layer`."""
        self.running.reveal_layer(name)

    def current_config(self) -> Any:
        """See :meth:`workflow.Running.current_config`."""
        return self.running.current_config()

    def queue_problem(self) -> str | None:
        """See :meth:`queueing.Queueing.queue_problem`."""
        return self.queueing.queue_problem()

    def current_job(self, output: str | None = None) -> Job:
        """See :meth:`queueing.Queueing.current_job`."""
        return self.queueing.current_job(output)

    def add_current_to_queue(self) -> list[str]:
        """See :meth:`queueing.Queueing.add_current_to_queue`."""
        return self.queueing.add_current_to_queue()

    def queue_checkpoints(self, paths: list[str], script: str | None = None) -> list[str]:
        """See :meth:`queueing.Queueing.queue_checkpoints`."""
        return self.queueing.queue_checkpoints(paths, script)

    def import_job_files(self, paths: list[str]) -> list[str]:
        """See :meth:`queueing.Queueing.import_job_files`."""
        return self.queueing.import_job_files(paths)

    def show_queue(self) -> None:
        """See :meth:`queueing.Queueing.show_queue`."""
        self.queueing.show_queue()

    # -- persistence ------------------------------------------------------------------------
    def _restore(self) -> None:
        geometry = self.store.geometry()
        if geometry is None or not self.restoreGeometry(geometry):
            self.resize(*DEFAULT_SIZE)
        state = self.store.window_state()
        if state is not None:
            self.restoreState(state, STATE_VERSION)
        self.settings_panel.set_values(self.store.quant_settings())
        self.rebuild_recent_menu()

    def save_persistent(self) -> None:
        """Write geometry, dock layout and settings now (also done on close)."""
        self.store.save_window(self.saveGeometry(), self.saveState(STATE_VERSION))
        self.store.save_quant_settings(self.settings_panel.persistent_values())
        self.store.sync()

    def _settings_changed(self) -> None:
        self.store.save_quant_settings(self.settings_panel.persistent_values())
        s = self.session
        with contextlib.suppress(ConfigError):  # the panel's note says why; the last valid config stays
            s.config = self.settings_panel.config(s.config.layers)
        self.running.show_precisions()
        samples = self.settings_panel.values()["samples"] or None
        if samples != s.samples:
            s.samples = samples
            if s.calibration:
                self._preview_timer.start()  # the preview counts the files a run would use
        self.update_actions()

    def _preview_after_edit(self) -> None:
        if self.session.calibration and not self.runner.has("load"):  # a load previews on its own
            self.preview_calibration()

    def rebuild_recent_menu(self) -> None:
        menu = self.commands.recent_menu
        menu.clear()
        labels = {"script": "Script", "checkpoint": "Checkpoint", "calibration": "Calibration folder"}
        handlers = {
            "script": self.open_script,
            "checkpoint": self.open_checkpoint,
            "calibration": self.set_calibration_folder,
        }
        pairs = self.store.recent_checkpoints()
        any_items = False
        for kind, label in labels.items():
            paths = self.store.recent(kind)
            if not paths:
                continue
            if any_items:
                menu.addSeparator()
            menu.addSection(label)
            for path in paths:
                checkpoint = pairs.get(path) if kind == "script" else None
                action = QAction(recent_label(path, checkpoint), menu)
                tip = path if checkpoint is None else f"{path}\nwith {checkpoint}"
                action.setToolTip(tip)
                action.setStatusTip(tip.replace("\n", " "))
                if kind == "script":  # the model reopens with the checkpoint it loaded with
                    action.triggered.connect(lambda _=False, p=path, c=checkpoint: self.open_script(p, c))
                else:
                    action.triggered.connect(lambda _=False, p=path, h=handlers[kind]: h(p))
                menu.addAction(action)
            any_items = True
        if not any_items:
            empty = menu.addAction("No recent files")
            empty.setEnabled(False)
        menu.addSeparator()
        menu.addAction(self.commands.clear_recent)

    def clear_recent(self) -> None:
        self.store.clear_recent()
        self.rebuild_recent_menu()

    # -- drag and drop (anywhere on the window) -------------------------------------------------
    def eventFilter(self, watched: QObject, event: QEvent) -> bool:
        kind = event.type()
        if kind in (QEvent.Type.DragEnter, QEvent.Type.DragMove, QEvent.Type.Drop) and self._is_mine(watched):
            paths = local_paths(event.mimeData())
            if paths:
                event.setDropAction(Qt.DropAction.CopyAction)
                event.accept()
                if kind == QEvent.Type.Drop:
                    self.opening.route_drop(paths, into_queue=self._in_queue_pane(watched))
                return True
        return super().eventFilter(watched, event)

    def _is_mine(self, obj: QObject) -> bool:
        return isinstance(obj, QWidget) and (obj is self or self.isAncestorOf(obj))

    def _in_queue_pane(self, obj: QObject) -> bool:
        return isinstance(obj, QWidget) and (obj is self.queue_panel or self.queue_panel.isAncestorOf(obj))

    # -- closing ------------------------------------------------------------------------------
    #: Ask before quitting while a run, a save or the queue is at work (tests switch it off
    #: before closing their windows).
    confirm_quit_while_busy = True

    def work_in_progress(self) -> str | None:
        """What quitting now would stop (None: nothing that loses work)."""
        task = self.runner.current
        what = []
        if task is not None and task.kind in ("quantize", "save"):
            what.append(task.title.lower())
        if self.queue_panel.runner.running:
            what.append("the queue's jobs")
        return " and ".join(what) or None

    def closeEvent(self, event: QCloseEvent) -> None:
        busy = self.work_in_progress()
        if busy and self.confirm_quit_while_busy and not dialogs.confirm_quit(self, busy):
            event.ignore()
            return
        self.save_persistent()
        QApplication.instance().removeEventFilter(self)
        self._layer_timer.stop()
        self._preview_timer.stop()
        preferences = getattr(self, "preferences_dialog", None)
        if preferences is not None:
            preferences.reject()  # stops its connection test's thread
        self.queue_panel.shutdown()  # running queue jobs are cancelled and saved as queued
        self.runner.shutdown()
        self.log_view.detach()
        super().closeEvent(event)

    # -- preferences ----------------------------------------------------------------------------
    def show_preferences(self) -> PreferencesDialog:
        """Open Preferences (not blocking); OK saves the queue's target and hands it to the Queue pane."""
        dialog = PreferencesDialog(self.store.queue_target(), self)
        dialog.accepted.connect(lambda: self.apply_queue_target(dialog.target()))
        dialog.finished.connect(dialog.deleteLater)
        dialog.finished.connect(lambda _result: setattr(self, "preferences_dialog", None))
        dialog.open()
        self.preferences_dialog: PreferencesDialog | None = dialog
        return dialog

    def apply_queue_target(self, target: QueueTarget) -> None:
        """Remember where the queue runs jobs and run the next ones there."""
        self.store.save_queue_target(target)
        self.store.sync()
        self.queue_panel.set_target(target)
        self.statusBar().showMessage(f"Queued jobs now run on {target.describe()}")

    # -- help -----------------------------------------------------------------------------------
    def show_about(self) -> QMessageBox:
        """The About box: version, the versions of torch, PySide6, Qt and safetensors, licence."""
        box = QMessageBox(
            QMessageBox.Icon.NoIcon,
            f"About {identity.DISPLAY_NAME}",
            help_menu.about_html(),
            QMessageBox.StandardButton.Close,
            self,
        )
        box.setObjectName("about_box")
        box.setTextFormat(Qt.TextFormat.RichText)
        box.setTextInteractionFlags(Qt.TextInteractionFlag.TextBrowserInteraction)  # the homepage link opens
        box.setIconPixmap(identity.app_icon().pixmap(64, 64))
        box.open()
        self.about_box = box
        return box

    def open_documentation(self) -> None:
        """Open the bundled user guide in the system's browser."""
        try:
            path = help_menu.user_guide_path()
        except OSError as exc:
            self.last_error = dialogs.show_error(self, "User guide", str(exc))
            return
        if not QDesktopServices.openUrl(QUrl.fromLocalFile(str(path))):
            self.last_error = dialogs.show_error(
                self,
                "User guide",
                f"No application could open the user guide. Open this file in a web browser:\n{path}",
            )
