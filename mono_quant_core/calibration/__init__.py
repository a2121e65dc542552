"""Observers and the hook-driven calibration run (docs/architecture.md, "Calibration")."""

from __future__ import annotations

from .base import Observer, affine_qparams
from .hooks import observed_inputs
from .observers import make_observer
from .runner import CalibrationResult, calibrate

__all__ = ["CalibrationResult", "Observer", "affine_qparams", "calibrate", "make_observer", "observed_inputs"]
