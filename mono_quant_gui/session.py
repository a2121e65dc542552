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
