"""Exceptions of the engine; every one names the file or field at fault."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch-free at run time: the results are only named here
    from .loading.key_report import KeyReport
    from .quantizer import QuantResult
    from .report import QuantReport


class MonoQuantError(Exception):
    """Base class: a problem with the user's input or a failed check, never a bug."""


class ConfigError(MonoQuantError, ValueError):
    """A configuration or job-file value is not allowed.

    When the value belongs to a named setting, ``key`` is its name (a QuantConfig field or a
    job-file key), ``section`` its job-file section if any, ``problem`` the message
    without the name, and ``rule`` the rule that was broken, said without the value given
    (``int4 is weight-only``: what a settings panel shows beside an option it disables);
    each is None when not known.
    """

    def __init__(
        self,
        message: str,
        *,
        section: str | None = None,
        key: str | None = None,
        problem: str | None = None,
        rule: str | None = None,
    ) -> None:
        super().__init__(message)
        self.section = section
        self.key = key
        self.problem = problem
        self.rule = rule

    def located(self, where: str) -> ConfigError:
        """The same error with ``where: `` (a file name) before its message."""
        return ConfigError(f"{where}: {self}", section=self.section, key=self.key, problem=self.problem, rule=self.rule)


class ScriptError(MonoQuantError):
    """The model script could not be imported or no model could be found in it."""


class AmbiguousEntryError(ScriptError):
    """Several models fit; ``candidates`` lists their names for the user to pick."""

    def __init__(self, message: str, candidates: list[str]) -> None:
        super().__init__(message)
        self.candidates = list(candidates)


class CheckpointError(MonoQuantError):
    """The checkpoint is unreadable, unsafe, or does not match the model.

    ``keys`` is the key report (a ``KeyReport``) when the checkpoint was read and
    matched against the model, so an application can show it and offer
    ``strict=False``; None otherwise.
    """

    def __init__(self, message: str, keys: KeyReport | None = None) -> None:
        super().__init__(message)
        self.keys = keys


class QuantizedCheckpointError(CheckpointError):
    """A mono-quant output was given where a float checkpoint is expected.

    ``path`` is the file, ``file_format`` ``"safetensors"`` or ``"pt"``; the message says
    how to open it instead (``load_quantized``, ``mono-quant inspect``).
    """

    def __init__(self, message: str, path: str, file_format: str, what: str = "a mono-quant output") -> None:
        super().__init__(message)
        self.path = path
        self.file_format = file_format
        #: What the file is, for a question that names it ("a mono-quant output (int8, weight-only)").
        self.what = what


class MetricError(MonoQuantError):
    """A task metric could not be found, run, or read.

    ``script`` is the model script's absolute path (None for a metric given as a plain
    callable) and ``function`` the metric's name (``evaluate`` unless ``--metric`` named another).
    """

    def __init__(self, message: str, script: str | None, function: str) -> None:
        super().__init__(message)
        self.script = script
        self.function = function


class CalibrationError(MonoQuantError):
    """A calibration folder or one of its files is unusable."""


class QuantizedFileError(MonoQuantError):
    """A quantized file is corrupt, foreign, too new, or does not match the script."""


class ValidationFailed(MonoQuantError):
    """A run failed its checks while ``on_failure == "error"``.

    ``report`` holds the figures and ``result`` the run's result (its model included), when known.
    """

    def __init__(self, message: str, report: QuantReport | None = None, result: QuantResult | None = None) -> None:
        super().__init__(message)
        self.report = report
        self.result = result


class Cancelled(MonoQuantError):
    """Raised when a cancel token is set during long work."""


class ContentHashError(QuantizedFileError):
    """A quantized file's content differs from the SHA-256 hashes recorded when it was written.

    ``path`` is the file; ``tensor`` the first tensor that differs, or None when the metadata does.
    """

    def __init__(self, message: str, path: str, tensor: str | None):
        super().__init__(message)
        self.path = path
        self.tensor = tensor


class ExportError(MonoQuantError):
    """A quantized model cannot be written in a runtime's format (ONNX QDQ, ...).

    ``layers`` names the layers at fault (empty when the problem is not one layer's).
    """

    def __init__(self, message: str, layers: list[str] | None = None) -> None:
        super().__init__(message)
        self.layers = list(layers or [])


class ClusterError(MonoQuantError):
    """A Ray cluster cannot be reached or used, or a job's worker died more often than retried.

    ``address`` is the cluster's address as given (``local``, ``auto``, ``ray://host:port``);
    the message starts with it and says the problem (mono_quant_core.cluster, docs/queue.md).
    """

    def __init__(self, message: str, address: str = "") -> None:
        super().__init__(message)
        self.address = address
