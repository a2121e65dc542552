"""What the window is working on: inputs, the loaded model and the last result."""

from __future__ import annotations

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
