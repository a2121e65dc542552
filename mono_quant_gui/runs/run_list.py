"""``RunList``, the controller of the Runs pane: the runs of the model on screen (``session.runs``),
showing one on the dashboard, saving any of them, and comparing two."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import mono_quant_core as mq
from mono_quant_gui.runs.compare_view import CompareDialog

if TYPE_CHECKING:
    from mono_quant_gui.window.main_window import MainWindow


class RunList:
    """What the Runs pane shows and does; the window calls :meth:`refresh` when ``session.runs`` changes."""

    def __init__(self, window: MainWindow) -> None:
        self.w = window
        #: (run, file it was last saved to): the run itself is kept, so it is matched by identity.
        self._files: list[tuple[Any, str]] = []
        self.compare_dialog: CompareDialog | None = None

    def connect(self) -> None:
        panel = self.w.runs_panel
        panel.show_requested.connect(self.show_run)
        panel.save_requested.connect(self.save_run)
        panel.compare_requested.connect(self.compare)
        self.w.runner.busy_changed.connect(panel.set_busy)

    def refresh(self) -> None:
        """The pane shows ``session.runs`` again (files of runs no longer listed are forgotten)."""
        s = self.w.session
        self._files = [(run, path) for run, path in self._files if any(run is r for r in s.runs)]
        shown = next((i for i, run in enumerate(s.runs) if run is s.result), None)
        self.w.runs_panel.set_runs(list(s.runs), [self.file_of(run) for run in s.runs], shown)
        if not s.runs:
            self.close_comparison()  # another model: its runs are gone

    def file_of(self, run: Any) -> str | None:
        """The file ``run`` was last saved to (None: not saved)."""
        return next((path for r, path in reversed(self._files) if r is run), None)

    def saved(self, run: Any, path: str) -> None:
        """``run`` was written to ``path`` (called when its save finished)."""
        if any(run is r for r in self.w.session.runs):
            self._files.append((run, path))
        self.refresh()

    # -- the pane's buttons -------------------------------------------------------------------
    def show_run(self, index: int) -> None:
        """Run ``index`` on the dashboard and in the tree; it becomes what Save As saves."""
        runs = self.w.session.runs
        if not 0 <= index < len(runs) or self.w.runner.busy:
            return
        run = runs[index]
        self.w.running.show_run(run)
        path = self.file_of(run)
        self.w.file_label.setText(f"Saved {path}" if path else "")
        self.w.statusBar().showMessage(f"Showing run #{index + 1}")
        self.refresh()

    def save_run(self, index: int) -> None:
        """Ask for a path and save run ``index`` (any run, not only the last)."""
        runs = self.w.session.runs
        if 0 <= index < len(runs):
            self.w.running.save_result(runs[index])

    def compare(self, index_a: int, index_b: int) -> CompareDialog | None:
        """Show run ``index_b`` against run ``index_a`` in the (one, non-modal) comparison dialog."""
        runs = self.w.session.runs
        if not (0 <= index_a < len(runs) and 0 <= index_b < len(runs)):
            return None
        comparison = mq.compare_reports(runs[index_a].report, runs[index_b].report)
        if self.compare_dialog is None:
            self.compare_dialog = CompareDialog(self.w)
        dialog = self.compare_dialog
        dialog.set_comparison(comparison, f"#{index_a + 1}", f"#{index_b + 1}")
        if dialog.isVisible():
            dialog.raise_()  # a second comparison: the dialog comes to the front
        else:
            dialog.show()
        script = self.w.session.shown_inputs()[0]
        self.w.statusBar().showMessage(
            f"Comparing runs #{index_a + 1} and #{index_b + 1}" + (f" of {Path(script).name}" if script else "")
        )
        return dialog

    def close_comparison(self) -> None:
        """A comparison of runs no longer listed does not stay on screen."""
        if self.compare_dialog is not None:
            self.compare_dialog.close()
