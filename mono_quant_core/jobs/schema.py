"""The job file's sections and keys (DESIGN.md §5), their value kinds, and where each lands in a Job."""

from __future__ import annotations

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
    },
    "calibration": {"folder": "path", "samples": "integer", "seed": "integer", "skip_unusable": "boolean"},
    "validation": {"on_failure": "choice", "min_output_sqnr_db": "float", "warn_layer_sqnr_db": "float"},
    "output": {"path": "path", "report": "path"},
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
}

#: The sections whose keys are QuantConfig fields.
CONFIG_SECTIONS = ("quantization", "validation")

#: Output file extensions, which choose the format.
OUTPUT_SUFFIXES = (".safetensors", ".pt", ".pth")


def config_section(field_name: str) -> str:
    """The section a QuantConfig field is written in."""
    return "validation" if field_name in SECTIONS["validation"] else "quantization"


def job_error(section: str, key: str, problem: str) -> ConfigError:
    """A ConfigError reading ``[section] key: problem``, with those three kept as fields."""
    return ConfigError(f"[{section}] {key}: {problem}", section=section, key=key, problem=problem)


def config_error_in_job(exc: ConfigError) -> ConfigError:
    """QuantConfig's ``field: problem`` error, placed in its job-file section."""
    field_name, problem = exc.key, exc.problem
    if (
        field_name is None
        or problem is None
        or (field_name not in SECTIONS["quantization"] and field_name not in SECTIONS["validation"])
    ):
        return job_error("quantization", "?", str(exc))
    return job_error(config_section(field_name), field_name, problem)
