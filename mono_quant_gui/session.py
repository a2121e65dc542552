"""What the window is working on: inputs, the loaded model and the last result."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any


@dataclass
class Session:
    script: str | None = None
    checkpoint: str | None = None
    entry: str | None = None
    entry_kwargs: dict[str, Any] | None = None
    job_config: Any = None  # QuantConfig of an opened job, until its layers are ticked
    calibration: str | None = None
    loaded: Any = None  # mono_quant_core LoadedModel
    rows: list[Any] | None = None  # ModuleRows of loaded.model
    result: Any = None  # QuantResult of the last finished run
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
        self.job_config = None

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
