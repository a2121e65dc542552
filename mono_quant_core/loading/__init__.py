"""Inputs (DESIGN.md §3): a model from its script and checkpoint, calibration folders.

User-facing rules are in docs/inputs.md.
"""

from __future__ import annotations

from .calibration_files import CALIBRATION_SUFFIXES, natural_key
from .calibration_preview import CalibrationPreview, FilePreview, TensorSummary, preview_calibration
from .calibration_set import CalibrationSet, load_calibration
from .checkpoint_files import checkpoint_sha256
from .entries import list_entries
from .key_report import KeyReport
from .model_loader import LoadedModel, load_checkpoint, load_model, open_model
from .script_import import import_script

__all__ = [
    "CALIBRATION_SUFFIXES",
    "CalibrationPreview",
    "CalibrationSet",
    "FilePreview",
    "KeyReport",
    "LoadedModel",
    "TensorSummary",
    "checkpoint_sha256",
    "import_script",
    "list_entries",
    "load_calibration",
    "load_checkpoint",
    "load_model",
    "natural_key",
    "open_model",
    "preview_calibration",
]
