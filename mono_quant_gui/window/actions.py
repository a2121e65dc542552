"""The window's actions (with icons, shortcuts and tips), its menus and its toolbar."""

from __future__ import annotations

from PySide6.QtCore import QObject, Qt
from PySide6.QtGui import QAction, QKeySequence
from PySide6.QtWidgets import QMainWindow, QMenu, QToolBar, QToolButton

from mono_quant_gui.demo import DEMO_KEYS, demo
from mono_quant_gui.window.icons import icon


class Actions(QObject):
    """Every QAction of the main window, created once; the window connects them."""

    def __init__(self, window: QMainWindow):
        super().__init__(window)

        def make(
            name: str, text: str, icon_name: str | None, shortcut: str | None, tip: str, color: str | None = None
        ) -> QAction:
            action = QAction(text, window)
            action.setObjectName(name)
            if icon_name:
                action.setIcon(icon(icon_name, color))
            if shortcut:
                action.setShortcut(QKeySequence(shortcut))
                tip = f"{tip} ({QKeySequence(shortcut).toString(QKeySequence.SequenceFormat.NativeText)})"
            action.setToolTip(tip)
            action.setStatusTip(tip)
            window.addAction(action)
            return action

        self.open_script = make(
            "open_script", "Open Script…", "open-script", "Ctrl+O", "Open the Python script that defines the model"
        )
        self.open_checkpoint = make(
            "open_checkpoint",
            "Open Checkpoint…",
            "open-checkpoint",
            "Ctrl+Shift+O",
            "Load weights into the model (.pt, .pth, .bin, .ckpt, .safetensors)",
        )
        self.open_quantized = make(
            "open_quantized",
            "Open Quantized…",
            None,
            None,
            "Open a file mono-quant wrote: its layers, report and figures, to run, save again or export",
        )
        self.calibration = make(
            "calibration", "Calibration Folder…", "calibration", "Ctrl+L", "Choose a folder of calibration samples"
        )
        self.quantize = make(
            "quantize", "Quantize", "quantize", "Ctrl+R", "Quantize the ticked layers with these settings", "#2f8f46"
        )
        self.analyze_sensitivity = make(
            "analyze_sensitivity",
            "Analyze Sensitivity",
            "sensitivity",
            "Ctrl+Shift+A",
            "Quantize each ticked layer alone and measure what it costs the model's output",
        )
        self.cancel = make("cancel", "Cancel", "cancel", "Esc", "Stop the running task", "#c0392b")
        self.save_as = make("save_as", "Save As…", "save", "Ctrl+S", "Save the quantized model as .safetensors or .pt")
        self.export_layers = make(
            "export_layers",
            "Export Layer Table…",
            None,
            None,
            "Write the per-layer results on screen (SQNR, sizes, kernels) as a CSV file",
        )
        self.add_to_queue = make(
            "add_to_queue",
            "Add to Queue",
            "queue",
            "Ctrl+Shift+R",
            "Queue a job with the open model, checkpoint, calibration folder, ticked layers "
            "and settings; the Queue pane runs it in the background",
        )
        self.preferences = make(
            "preferences",
            "Preferences…",
            None,
            "Ctrl+,",
            "Where the queue runs its jobs: this computer or a Ray cluster",
        )
        self.preferences.setMenuRole(QAction.MenuRole.PreferencesRole)
        self.quit = make("quit", "Quit", None, "Ctrl+Q", "Close mono-quant")
        self.quit.setMenuRole(QAction.MenuRole.QuitRole)
        self.clear_recent = make("clear_recent", "Clear Recent Files", None, None, "Forget the recent files")
        self.reset_layout = make("reset_layout", "Reset Layout", None, None, "Put every pane back in its place")
        self.documentation = make(
            "documentation", "User Guide", None, "F1", "Open the mono-quant user guide in your web browser"
        )
        self.about = make("about", "About mono-quant", None, None, "Versions and licence")
        self.about.setMenuRole(QAction.MenuRole.AboutRole)
        self.demos = {
            key: make(f"demo_{key}", demo(key).title, "demo", None, f"Open the bundled example: {demo(key).title}")
            for key in DEMO_KEYS
        }
        self.open_demo = make("open_demo", "Open Demo", "demo", None, f"Open the bundled example: {demo('cnn').title}")
        self.recent_menu = QMenu("Open &Recent", window)
        self.recent_menu.setObjectName("recent_menu")

    def build_menus(self, window: QMainWindow, dock_toggles: list[QAction]) -> None:
        bar = window.menuBar()
        file_menu = bar.addMenu("&File")
        file_menu.addActions([self.open_script, self.open_checkpoint, self.open_quantized, self.calibration])
        file_menu.addMenu(self.recent_menu)
        file_menu.addSeparator()
        file_menu.addAction(self.save_as)
        file_menu.addAction(self.export_layers)
        self.export_anchor = file_menu.addSeparator()  # File → Export goes here (export_actions.py)
        file_menu.addAction(self.preferences)
        file_menu.addSeparator()
        file_menu.addAction(self.quit)
        self.file_menu = file_menu
        run_menu = bar.addMenu("&Run")
        run_menu.addActions([self.quantize, self.analyze_sensitivity, self.cancel])
        run_menu.addSeparator()
        run_menu.addAction(self.add_to_queue)
        demo_menu = bar.addMenu("&Demo")
        demo_menu.addActions(list(self.demos.values()))
        view_menu = bar.addMenu("&View")
        view_menu.addActions(dock_toggles)
        view_menu.addSeparator()
        view_menu.addAction(self.reset_layout)
        help_menu = bar.addMenu("&Help")
        help_menu.addAction(self.documentation)
        help_menu.addSeparator()
        help_menu.addAction(self.about)

    def build_toolbar(self, window: QMainWindow) -> QToolBar:
        toolbar = QToolBar("Main toolbar", window)
        toolbar.setObjectName("main_toolbar")
        toolbar.setMovable(False)
        toolbar.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextBesideIcon)
        toolbar.addActions([self.open_script, self.open_checkpoint, self.calibration])
        toolbar.addSeparator()
        toolbar.addActions([self.quantize, self.analyze_sensitivity, self.cancel])
        toolbar.addSeparator()
        toolbar.addActions([self.save_as, self.add_to_queue])
        toolbar.addSeparator()
        demo_button = QToolButton(toolbar)
        demo_button.setObjectName("demo_button")
        demo_button.setText("Demo")
        demo_button.setIcon(icon("demo"))
        demo_button.setToolTip("Open a bundled example model")
        demo_button.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextBesideIcon)
        demo_button.setPopupMode(QToolButton.ToolButtonPopupMode.InstantPopup)
        menu = QMenu(demo_button)
        menu.addActions(list(self.demos.values()))
        demo_button.setMenu(menu)
        toolbar.addWidget(demo_button)
        window.addToolBar(Qt.ToolBarArea.TopToolBarArea, toolbar)
        return toolbar
