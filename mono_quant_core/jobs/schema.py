"""The job file's sections and keys (DESIGN.md §5), their value kinds, and where each lands in a Job."""

from __future__ import annotations

from typing import Any

from ..errors import ConfigError

#: section -> key -> kind; the order is the order a job file is written in.
SECTIONS: dict[str, dict[str, str]] = {
    "model": {"script": "path", "entry": "string", "entry_kwargs": "table", "checkpoint": "path", "strict": "boolean"},
    "quantization": {
        "dtype": "choice",
        "mode": "choice",
        "scheme": "choice",
        "granularity": "choice",
        "group_size": "integer",
        "observer": "choice",
        "include_types": "names",
        "exclude_types": "names",
        "include": "names",
        "exclude": "names",
        "layers": "names",
        "percentile": "float",
        "moving_average_constant": "float",
        "histogram_bins": "integer",
        "histogram_method": "choice",
        "fallback": "choice",
        "algorithm": "choice",
        "gptq_damp": "float",
        "gptq_act_order": "boolean",
        "gptq_block_size": "integer",
        "hqq_iterations": "integer",
        "smoothquant_alpha": "float",
        "bias_correction": "boolean",
        "device": "string",
        "fold_batchnorm": "boolean",
        # Written last, as the table [quantization.overrides]: "pattern" = { field = value }.
        "overrides": "overrides",
    },
    "calibration": {"folder": "path", "samples": "integer", "seed": "integer", "skip_unusable": "boolean"},
    "validation": {
        "on_failure": "choice",
        "min_output_sqnr_db": "float",
        "warn_layer_sqnr_db": "float",
        "validation_samples": "integer",
        "target_output_sqnr_db": "float",
        "target_metric_drop": "float",
        "metric": "string",
    },
    "output": {"path": "path", "report": "path", "max_shard_size": "string"},
}

#: (section, key) -> Job attribute, for the keys that are not QuantConfig fields.
JOB_FIELDS: dict[tuple[str, str], str] = {
    ("model", "script"): "script",
    ("model", "entry"): "entry",
    ("model", "entry_kwargs"): "entry_kwargs",
    ("model", "checkpoint"): "checkpoint",
    ("model", "strict"): "strict",
    ("calibration", "folder"): "calibration_folder",
    ("calibration", "samples"): "samples",
    ("calibration", "seed"): "seed",
    ("calibration", "skip_unusable"): "skip_unusable",
    ("output", "path"): "output",
    ("output", "report"): "report_path",
    ("output", "max_shard_size"): "max_shard_size",
    ("validation", "metric"): "metric",
}

#: Job-file keys whose QuantConfig field is named otherwise.
FIELD_OF_KEY: dict[str, str] = {"overrides": "layer_overrides"}

#: The sections whose keys are QuantConfig fields.
CONFIG_SECTIONS = ("quantization", "validation")

#: Output file extensions, which choose the format.
OUTPUT_SUFFIXES = (".safetensors", ".pt", ".pth")


def config_field(key: str) -> str:
    """The QuantConfig field a job-file key of a config section sets."""
    return FIELD_OF_KEY.get(key, key)


def config_key(field_name: str) -> str:
    """The job-file key of a QuantConfig field."""
    return next((key for key, name in FIELD_OF_KEY.items() if name == field_name), field_name)


def config_section(field_name: str) -> str:
    """The section a QuantConfig field is written in."""
    return "validation" if field_name in SECTIONS["validation"] else "quantization"


def is_config_key(section: str, key: str) -> bool:
    """Whether ``[section] key`` is a QuantConfig field (not a Job attribute such as ``metric``)."""
    return section in CONFIG_SECTIONS and (section, key) not in JOB_FIELDS


def failing_override(settings: dict[str, Any], overrides: dict[str, Any]) -> tuple[str, ConfigError] | None:
    """The first override QuantConfig refuses on its own (with the rest of ``settings``), and why.

    QuantConfig checks all overrides at once; this finds the pattern to name in the error.
    """
    from ..config import QuantConfig

    base = {k: v for k, v in settings.items() if k != "layer_overrides"}
    try:
        QuantConfig(**base)
    except ConfigError:
        return None  # the error is not the overrides'
    for pattern, fields in overrides.items():
        try:
            QuantConfig(**base, layer_overrides={pattern: fields})
        except ConfigError as exc:
            return pattern, exc
    return None


def job_error(section: str, key: str, problem: str) -> ConfigError:
    """A ConfigError reading ``[section] key: problem``, with those three kept as fields."""
    return ConfigError(f"[{section}] {key}: {problem}", section=section, key=key, problem=problem)


def config_error_in_job(exc: ConfigError) -> ConfigError:
    """QuantConfig's ``field: problem`` error, placed in its job-file section."""
    field_name, problem = exc.key, exc.problem
    if field_name == "layer_overrides" and problem is not None:
        return job_error("quantization", "overrides", problem)
    if (
        field_name is None
        or problem is None
        or (field_name not in SECTIONS["quantization"] and field_name not in SECTIONS["validation"])
    ):
        return job_error("quantization", "?", str(exc))
    return job_error(config_section(field_name), field_name, problem)
