"""Exceptions of the engine; every one names the file or field at fault."""

from __future__ import annotations


class MonoQuantError(Exception):
    """Base class: a problem with the user's input or a failed check, never a bug."""


class ConfigError(MonoQuantError, ValueError):
    """A configuration or job-file value is not allowed."""


class ScriptError(MonoQuantError):
    """The model script could not be imported or no model could be found in it."""


class AmbiguousEntryError(ScriptError):
    """Several models fit; ``candidates`` lists their names for the user to pick."""

    def __init__(self, message: str, candidates: list[str]):
        super().__init__(message)
        self.candidates = list(candidates)


class CheckpointError(MonoQuantError):
    """The checkpoint is unreadable, unsafe, or does not match the model."""


class QuantizedCheckpointError(CheckpointError):
    """A mono-quant output was given where a float checkpoint is expected.

    ``path`` is the file, ``file_format`` ``"safetensors"`` or ``"pt"``; the message says
    how to open it instead (``load_quantized``, ``mono-quant inspect``).
    """

    def __init__(self, message: str, path: str, file_format: str):
        super().__init__(message)
        self.path = path
        self.file_format = file_format


class CalibrationError(MonoQuantError):
    """A calibration folder or one of its files is unusable."""


class QuantizedFileError(MonoQuantError):
    """A quantized file is corrupt, foreign, too new, or does not match the script."""


class ValidationFailed(MonoQuantError):
    """A run failed its checks while ``on_failure == "error"``; ``report`` holds the figures."""

    def __init__(self, message: str, report=None):
        super().__init__(message)
        self.report = report


class Cancelled(MonoQuantError):
    """Raised when a cancel token is set during long work."""
