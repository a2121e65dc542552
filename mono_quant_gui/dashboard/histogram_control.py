"""The Histogram pane's controller: the selected layer's histograms, computed on the window's runner.

A layer selected in the module tree is histogrammed in a task (torch never
runs on the GUI thread), only while the pane is on screen, and one task at a
time: a newer selection cancels the running one and is computed when it ends.
While the runner is busy with other work (a run, a save) the pane says so and
computes once the runner is idle.  Results are kept per layer until the run,
the model or the calibration folder changes.

Before any run the float weights are shown alone ("Quantize to see the
clipping range and grid"); the inputs need a calibration folder, whose
first :data:`MAX_SAMPLES` samples (as a run would choose them) go through the
float model.
"""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING, Any

from PySide6.QtCore import QTimer

from mono_quant_gui.dashboard.histogram_view import HistogramView
from mono_quant_gui.run.worker import Task

if TYPE_CHECKING:
    from mono_quant_gui.run.worker import TaskContext
    from mono_quant_gui.window.main_window import MainWindow

#: Calibration samples run through the float model for a layer's inputs.
MAX_SAMPLES = 16
KIND = "histogram"
#: A new selection waits this long for the next one before it is computed.
SETTLE_MS = 60
NO_RUN = "Quantize to see the clipping range and grid"
NO_LAYER = ("Select a layer", "Select a Linear, Conv, Embedding, LSTM or GRU layer in the module tree.")
NO_SAMPLES = "activations need calibration samples (Calibration Folder…, Ctrl+L)"


def histogram_task(
    ctx: TaskContext,
    model: Any,
    quantized: Any,
    name: str,
    folder: str | None,
    samples: int | None,
    seed: int | None,
) -> Any:
    """``layer_histograms`` of ``name`` (on the worker thread), with the folder's samples when given."""
    from mono_quant_gui.run.tasks import prepare_torch

    prepare_torch()
    import mono_quant_core as mq

    # check=False: only the samples used are read (a file that cannot be used fails here, said in the pane).
    calibration = mq.load_calibration(folder, samples=samples, seed=seed, check=False) if folder else None
    return mq.layer_histograms(model, quantized, name, calibration, max_samples=MAX_SAMPLES, cancel=ctx.cancel)


class Histograms:
    """Keeps the Histogram pane showing the layer selected in the module tree."""

    def __init__(self, window: MainWindow) -> None:
        self.w = window
        self.view = HistogramView()
        self.dock: Any = None
        self.task: Task | None = None
        #: A selection or a result arrived that is not on screen yet (pane hidden, runner busy).
        self._dirty = False
        self._cache: dict[tuple, Any] = {}
        self._cache_result: Any = None
        # Arrow keys through the tree select a layer per key press: the last one is computed.
        self._settle = QTimer(self.view, singleShot=True, interval=SETTLE_MS)
        self._settle.timeout.connect(self.update)

    def connect(self, dock: Any) -> None:
        """Follow the tree's selection, the pane's visibility and the runner's idleness."""
        self.dock = dock
        self.w.modules.layer_selected.connect(lambda _name: self._settle.start())
        dock.visibilityChanged.connect(self._visibility_changed)
        self.w.runner.busy_changed.connect(self._busy_changed)

    def on_screen(self) -> bool:
        """Whether the pane can be seen: shown, and its tab the current one (a tab behind another is
        "visible" to Qt, with nothing of it on screen)."""
        dock = self.dock
        return dock is not None and dock.isVisible() and not dock.visibleRegion().isEmpty()

    @property
    def name(self) -> str | None:
        """The layer selected in the module tree (None: none)."""
        return self.w.modules.selected_name() or None

    # -- what the window tells it -----------------------------------------------------------------
    def refresh(self) -> None:
        """A run finished (or another run is on screen): the clipping ranges changed."""
        self.update()

    def clear(self) -> None:
        """Another model or calibration folder: nothing of the last one stays.  The pane follows the
        tree again once the window has shown what changed (the next turn of the event loop)."""
        self._cache.clear()
        self._cache_result = None
        if self.task is not None:
            self.task.cancel.cancel()
        self.view.show_hint(*NO_LAYER)
        QTimer.singleShot(0, self.view, self.update)

    def _visibility_changed(self, visible: bool) -> None:
        if visible and self._dirty:
            self.update()

    def _busy_changed(self, busy: bool) -> None:
        if not busy and self._dirty:
            self.update()

    # -- deciding ------------------------------------------------------------------------------------
    def _key(self) -> tuple:
        s = self.w.session
        return (self.name, s.calibration, s.samples, s.seed)

    def _layers(self) -> set[str]:
        report = self.w.session.report
        layers = set(self.w.modules.model.quantizable_names())
        return layers | {layer.name for layer in report.layers} if report is not None else layers

    def update(self) -> None:
        """Show the selected layer: from the cache, or computed when the pane is on screen and the runner free."""
        s, name = self.w.session, self.name
        self._dirty = False
        if s.model is None:
            self.view.show_hint("No model", "Open a model, then select one of its layers.")
            return
        if name is None or name not in self._layers():
            self.view.show_hint(*NO_LAYER)
            return
        if self._cache_result is not s.result:
            self._cache.clear()
            self._cache_result = s.result
        cached = self._cache.get(self._key())
        if cached is not None:
            self._show(cached)
            return
        self._dirty = True  # until computed
        if not self.on_screen():
            return  # computed when the pane is raised
        if self.task is not None:  # ours is running: it stops, and the newest selection follows
            self.task.cancel.cancel()
            self.view.show_busy(name, "computing…")
        elif self.w.runner.busy:
            self.view.show_busy(name, "busy: drawn when the running task ends")
        else:
            self._submit(name)

    def _submit(self, name: str) -> None:
        s, key = self.w.session, self._key()
        quantized = s.result.model if s.result is not None else None
        bar = self.w.statusBar()
        before = bar.currentMessage()
        title = f"Histogram of {name}"

        def ended() -> None:
            self.task = None
            if bar.currentMessage() == f"{title}…":
                bar.showMessage(before)  # the run's summary stays in the status bar

        def done(h: Any) -> None:
            ended()
            if s.result is self._cache_result:
                self._cache[key] = h
            self.update()  # this layer from the cache, or the one selected since

        def failed(message: str, details: str) -> None:
            ended()
            if key == self._key():  # said in the pane, not tried again
                self._dirty = False
                self.view.show_busy(name, f"could not compute: {message.splitlines()[0]}")
            else:
                self.update()

        def cancelled() -> None:
            ended()
            if self._dirty:
                self.update()
            else:
                self.view.show_busy(name, "stopped")

        self._dirty = False
        self.view.show_busy(name, "computing…")
        self.task = self.w.runner.submit(
            Task(
                KIND,
                title,
                partial(
                    histogram_task,
                    model=s.model,
                    quantized=quantized,
                    name=name,
                    folder=s.calibration,
                    samples=s.samples,
                    seed=s.seed,
                ),
                on_done=done,
                on_error=failed,
                on_cancel=cancelled,
            )
        )

    def _show(self, h: Any) -> None:
        s = self.w.session
        note = NO_RUN if s.result is None else ""
        self.view.show_layer(h, note, NO_SAMPLES if not s.calibration else "no floating-point input")
