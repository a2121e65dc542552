"""The bundled examples (resources/demo): a model script, its checkpoint and a calibration folder each."""

from __future__ import annotations

import importlib.resources
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Demo:
    key: str
    title: str
    script: Path
    checkpoint: Path
    calibration: Path


_TITLES = {
    "cnn": "Digits CNN (Conv2d + Linear, 8×8 images)",
    "transformer": "Tiny transformer (Embedding + TransformerEncoder)",
}
DEMO_KEYS = tuple(_TITLES)


def demo(key: str = "cnn") -> Demo:
    """Paths of one bundled example; ``key`` is "cnn" or "transformer"."""
    if key not in _TITLES:
        raise KeyError(f"demo {key!r}: choose one of {', '.join(_TITLES)}")
    # The resources are plain files on disk in every install mode we ship.
    folder = Path(str(importlib.resources.files("mono_quant_gui.resources") / "demo" / key))
    return Demo(key, _TITLES[key], folder / "model.py", folder / "model.safetensors", folder / "calibration")
