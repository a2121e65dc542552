"""``Job``: one quantization run as a job file describes it (DESIGN.md §5).

Paths are kept as given (the reader makes them absolute, relative to the job
file); :meth:`Job.save` writes a path relative to the job file's folder when
it lies inside that folder, absolute otherwise.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from typing import Any

from ..config import QuantConfig, needs_samples
from ..errors import ConfigError
from ..sizes import parse_size
from .schema import (
    JOB_FIELDS,
    OUTPUT_SUFFIXES,
    SECTIONS,
    config_error_in_job,
    config_field,
    is_config_key,
    job_error,
)
from .text_files import write_text_atomic
from .toml_writer import toml_key, toml_value

HEADER = "# mono-quant job file; run it with: mono-quant run {name}\n\n"


@dataclass
class Job:
    """Inputs, settings and outputs of one run; ``run_job`` executes it."""

    script: str
    output: str
    entry: str | None = None
    entry_kwargs: dict[str, Any] = field(default_factory=dict)
    checkpoint: str | None = None
    strict: bool = True
    config: QuantConfig = field(default_factory=QuantConfig)
    calibration_folder: str | None = None
    samples: int | None = None
    seed: int | None = None
    #: Leave out calibration files that cannot be used (the report lists them) instead of failing.
    skip_unusable: bool = False
    report_path: str | None = None
    #: The model script's task metric function (``[validation] metric``), run on the float and
    #: the quantized model; None: none, unless ``target_metric_drop`` needs one (then ``evaluate``).
    metric: str | None = None
    #: ``[output] max_shard_size`` ("5GB", "512MiB", bytes): write a ``.safetensors`` output larger
    #: than this as shards and an index (docs/file-format.md, "Sharded files"); None: one file.
    max_shard_size: str | None = None

    def __post_init__(self) -> None:
        for name in (
            "script",
            "output",
            "entry",
            "checkpoint",
            "calibration_folder",
            "report_path",
            "metric",
            "max_shard_size",
        ):
            value = getattr(self, name)
            if isinstance(value, os.PathLike):
                setattr(self, name, os.fspath(value))
            elif value == "" and name not in ("script", "output"):
                setattr(self, name, None)  # an empty field in the GUI means "not set"
        if self.entry_kwargs is None:
            self.entry_kwargs = {}
        self.validate()

    # -- checks -----------------------------------------------------------------
    def validate(self) -> None:
        """Raise ConfigError ``[section] key: problem`` for the first field that is not allowed."""
        for section, key in (("model", "script"), ("output", "path")):
            value = getattr(self, JOB_FIELDS[section, key])
            if not isinstance(value, str) or not value.strip():
                raise job_error(
                    section,
                    key,
                    "missing; a job needs the model script (.py) and the output file (.safetensors or .pt)",
                )
        for (section, key), name in JOB_FIELDS.items():
            _check_kind(section, key, getattr(self, name))
        if not self.output.lower().endswith(OUTPUT_SUFFIXES):
            raise job_error(
                "output",
                "path",
                f"{self.output!r} must end in {', '.join(OUTPUT_SUFFIXES)} (the extension chooses the format)",
            )
        if not isinstance(self.config, QuantConfig):
            raise job_error("quantization", "*", "config must be a QuantConfig")
        try:
            self.config.validate()
        except ConfigError as exc:
            raise config_error_in_job(exc) from None
        if self.calibration_folder is None:
            if self.config.needs_calibration:
                raise job_error(
                    "calibration",
                    "folder",
                    "mode static needs a calibration folder "
                    "(tensors to measure activation ranges on); add one or choose "
                    "mode weight-only or dynamic",
                )
            if needs_samples(self.config):
                key, what = _sample_user(self.config)
                raise job_error(
                    "quantization", key, f"{what} needs a calibration folder ([calibration] folder) of samples"
                )
            for key in ("samples", "seed"):
                if getattr(self, key) is not None:
                    raise job_error("calibration", key, "given without a calibration folder")
        if self.samples is not None and self.samples < 1:
            raise job_error("calibration", "samples", f"{self.samples} must be an integer >= 1")
        if self.seed is not None and self.seed < 0:
            raise job_error("calibration", "seed", f"{self.seed} must be an integer >= 0")
        if self.metric is not None and not self.metric.isidentifier():
            raise job_error("validation", "metric", f"{self.metric!r} is not the name of a function in the script")
        self._check_shard_size()
        if self.report_path is not None and _same_path(self.report_path, self.output):
            raise job_error("output", "report", "is the output file itself; choose another file")

    def _check_shard_size(self) -> None:
        if self.max_shard_size is None:
            return
        try:
            parse_size(self.max_shard_size, "max_shard_size")
        except ConfigError as exc:
            raise job_error("output", "max_shard_size", exc.problem or str(exc)) from None
        if not self.output.lower().endswith(".safetensors"):
            raise job_error("output", "max_shard_size", "only .safetensors outputs are written in shards")

    # -- writing ----------------------------------------------------------------
    def to_toml(self, relative_to: str | os.PathLike | None = None) -> str:
        """The job file's text; with ``relative_to`` (a folder), paths inside it are written relative."""
        self.validate()
        base = None if relative_to is None else os.path.abspath(relative_to)
        config = self.config.to_dict()
        lines: list[str] = []
        for section, keys in SECTIONS.items():
            lines.append(f"[{section}]")
            tables: list[str] = []
            for key, kind in keys.items():
                if is_config_key(section, key):
                    value = config[config_field(key)]
                    if kind == "float" and value is not None:
                        value = float(value)
                else:
                    value = getattr(self, JOB_FIELDS[section, key])
                    if kind == "path" and value is not None:
                        value = _written_path(value, base)
                if kind == "overrides":
                    tables += _overrides_table(section, key, value)
                elif value is not None:  # TOML has no null: an absent key means "not set"
                    lines.append(f"{toml_key(key)} = {toml_value(value, f'[{section}] {key}')}")
            lines.append("")
            lines += tables
        return "\n".join(lines)

    def save(self, path: str | os.PathLike) -> None:
        """Write the job file at ``path`` (atomically), paths relative to its folder where possible."""
        path = os.fspath(path)
        folder = os.path.dirname(os.path.abspath(path))
        text = HEADER.format(name=os.path.basename(path)) + self.to_toml(relative_to=folder)
        write_text_atomic(path, text)

    # -- reading ----------------------------------------------------------------
    @classmethod
    def load(cls, path: str | os.PathLike) -> Job:
        """Read and check a job file; errors name the file, the section and the key."""
        from .job_reader import load_job

        return load_job(path)

    @classmethod
    def from_toml(cls, text: str, base_dir: str | os.PathLike | None = None, name: str = "job") -> Job:
        """Parse job-file text; relative paths are taken relative to ``base_dir`` (default: cwd)."""
        from .job_reader import parse_job

        return parse_job(text, base_dir, name)

    def replace(self, **changes: Any) -> Job:
        return dataclasses.replace(self, **changes)


def _sample_user(config: QuantConfig) -> tuple[str, str]:
    """The ``[quantization]`` key whose option needs calibration samples, and the option said for a
    user (static mode is refused before)."""
    if config.algorithm == "gptq":
        return "algorithm", "GPTQ"
    if config.smoothquant_alpha is not None:
        return "smoothquant_alpha", "SmoothQuant"
    return "bias_correction", "bias correction"


def _check_kind(section: str, key: str, value: Any) -> None:
    if value is None and (section, key) not in (("model", "entry_kwargs"), ("model", "strict")):
        return
    kind = SECTIONS[section][key]
    if kind in ("path", "string") and not isinstance(value, str):
        raise job_error(section, key, f"must be a string, got {value!r}")
    if kind == "integer" and (isinstance(value, bool) or not isinstance(value, int)):
        raise job_error(section, key, f"must be an integer, got {value!r}")
    if kind == "boolean" and not isinstance(value, bool):
        raise job_error(section, key, f"must be true or false, got {value!r}")
    if kind == "table" and (not isinstance(value, dict) or not all(isinstance(k, str) for k in value)):
        raise job_error(section, key, f"must be a table of keyword arguments, got {value!r}")


def _overrides_table(section: str, key: str, overrides: dict[str, dict[str, Any]]) -> list[str]:
    """``[quantization.overrides]`` with one ``"pattern" = { field = value }`` line each; none when empty."""
    if not overrides:
        return []
    where = f"[{section}.{key}]"
    lines = [f"[{section}.{key}]"]
    lines += [f"{toml_key(p, where)} = {toml_value(f, f'{where} {p}')}" for p, f in overrides.items()]
    return [*lines, ""]


def _written_path(path: str, base: str | None) -> str:
    if base is None:
        return path
    full = os.path.abspath(path)
    relative = os.path.relpath(full, base)
    if relative == os.pardir or relative.startswith(os.pardir + os.sep):
        return full
    return relative.replace(os.sep, "/")


def _same_path(a: str, b: str) -> bool:
    return os.path.normcase(os.path.abspath(a)) == os.path.normcase(os.path.abspath(b))
