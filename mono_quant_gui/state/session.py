"""What the window is working on, free of Qt: inputs, the whole QuantConfig, the loaded model, its runs.

The panes show and edit this state; a job file opened in the window fills it
whole (fields without a widget included), so ``current_job()`` gives that job
back and a run started in the window is the run ``mono-quant run`` would do.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from mono_quant_core.config import QuantConfig


def _same_path(a: str | None, b: str | None) -> bool:
    if a is None or b is None:
        return a is b
    return os.path.realpath(a) == os.path.realpath(b)


@dataclass
class Session:
    script: str | None = None
    checkpoint: str | None = None
    entry: str | None = None
    entry_kwargs: dict[str, Any] | None = None
    #: The job file the window was filled from (its output, report path, seed, strictness and
    #: layer rules), while its model and calibration folder are the ones open.
    job: Any = None
    #: Layers the job's rules chose when its model loaded: while the ticks are these, the
    #: job's own rules (patterns, types) stand instead of the list of names.
    job_chosen: list[str] | None = None
    #: The whole QuantConfig the settings panel edits (layers aside, which the ticks give).
    config: QuantConfig = field(default_factory=QuantConfig)
    samples: int | None = None
    seed: int | None = None
    calibration: str | None = None
    #: The task metric's function in the script (None: its ``evaluate`` when it defines one).
    metric: str | None = None
    loaded: Any = None  # mono_quant_core LoadedModel
    rows: list[Any] | None = None  # ModuleRows of loaded.model
    result: Any = None  # QuantResult of the last finished run
    report: Any = None  # QuantReport on the dashboard: the last run's, also when its checks failed
    #: The SensitivityReport on the Sensitivity pane (None: none, or no longer valid for these settings).
    sensitivity: Any = None
    runs: list[Any] = field(default_factory=list)  # QuantResults of this model's runs, oldest first
    #: (script, checkpoint, entry, entry_kwargs) of the model on screen: what a failed or
    #: refused load goes back to.
    loaded_inputs: tuple[str | None, str | None, str | None, dict[str, Any] | None] | None = None

    def inputs(self) -> tuple[str | None, str | None, str | None, dict[str, Any] | None]:
        return self.script, self.checkpoint, self.entry, self.entry_kwargs

    def back_to_loaded(self) -> None:
        """After a failed, refused or stopped load: the inputs of the model on screen again.

        With no model on screen, a checkpoint chosen before any script stays
        waiting for one; the script that failed is forgotten.
        """
        if self.loaded_inputs is not None:
            self.script, self.checkpoint, self.entry, self.entry_kwargs = self.loaded_inputs
        else:
            self.script, self.entry, self.entry_kwargs = None, None, None
        self.job, self.job_chosen = None, None

    def job_inputs_open(self) -> bool:
        """Whether the job's model, checkpoint and calibration folder are the ones open now."""
        job = self.job
        if job is None or self.loaded_inputs is None:
            return False
        same = [
            _same_path(a, b) for a, b in ((job.script, self.loaded_inputs[0]), (job.checkpoint, self.loaded_inputs[1]))
        ]
        return all(same) and _same_path(job.calibration_folder, self.calibration)

    def layers(self, ticked: list[str]) -> list[str] | None:
        """``config.layers`` for these ticks: the job's own rules while the ticks are what they chose."""
        if self.job is not None and self.job_chosen is not None and ticked == self.job_chosen:
            return self.config.layers
        return ticked

    def checkpoint_for_script(self, script: str) -> str | None:
        """The checkpoint a script opened on its own loads with (the same rule for the dialog,
        a drop and Recent): the one waiting for a script when no model is on screen; the
        model's own when ``script`` is the script on screen (reloading it after an edit);
        none for another script, whose model the current checkpoint does not belong to."""
        if self.loaded_inputs is None:
            return self.checkpoint
        on_screen, checkpoint = self.loaded_inputs[0], self.loaded_inputs[1]
        same = on_screen is not None and os.path.realpath(on_screen) == os.path.realpath(script)
        return checkpoint if same else None

    @property
    def model(self) -> Any:
        return None if self.loaded is None else self.loaded.model

    def shown_inputs(self) -> tuple[str | None, str | None]:
        """``(script, checkpoint)`` of the model on screen; before any model loaded, those asked for.

        ``script`` and ``checkpoint`` are what was last opened, even when its
        load failed or was refused: the window keeps the previous model, and
        its title and Save As name stay that model's.
        """
        if self.loaded is None:
            return self.script, self.checkpoint
        source = self.loaded.source
        return source.get("script_path") or self.script, source.get("checkpoint_path")
