"""QuantConfig: one set of names and values shared by the API, the CLI, job files and the GUI.

Torch-free so the application can build its settings panel before torch loads.  The rules the
application asks before then live here too, once: spellings, "is a cast", "needs calibration",
layer name patterns (``selection`` applies them) and checkpoint suffixes (``loading`` reads by them).
"""

from __future__ import annotations

import dataclasses
import fnmatch
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .errors import ConfigError

DTYPES = ("int8", "int4", "fp16", "bf16")
#: The dtypes that are a plain cast: no scale, zero point or calibration.
CAST_DTYPES = ("fp16", "bf16")
MODES = ("weight-only", "dynamic", "static")
SCHEMES = ("symmetric", "asymmetric")
GRANULARITIES = ("per-channel", "per-tensor", "per-group")
OBSERVERS = ("minmax", "moving-average", "percentile", "histogram")
HISTOGRAM_METHODS = ("mse", "entropy")
ON_FAILURE = ("error", "warn", "ignore")
#: How weights are rounded onto their grid (docs/quantization-math.md, "Algorithms"): round to
#: nearest, GPTQ (Hessian-guided, needs calibration samples) or HQQ (data-free half-quadratic).
ALGORITHMS = ("rtn", "gptq", "hqq")
#: Every option of the algorithms, with its default: what the report records of a run.
ALGORITHM_DEFAULTS: dict[str, Any] = {
    "algorithm": "rtn",
    "gptq_damp": 0.01,
    "gptq_act_order": False,
    "gptq_block_size": 128,
    "hqq_iterations": 20,
    "smoothquant_alpha": None,
    "bias_correction": False,
}
#: What ``layer_overrides`` may set per layer.
#: The devices a run may name (whether one is present is checked when the run starts).
DEVICE_PATTERN = re.compile(r"auto|cpu|cuda(:\d+)?")
OVERRIDE_FIELDS = ("dtype", "mode", "scheme", "granularity", "group_size")
#: The dtype value of ``layer_overrides`` that keeps a layer in float.
FLOAT = "float"
#: ``QuantConfig.validation_samples`` by default: validation then costs about two float forward
#: passes of each of these few samples on top of quantization (docs/architecture.md).
DEFAULT_VALIDATION_SAMPLES = 8
#: Rungs of the automatic fallback: ``fallback = "int8"`` widens a layer to int8 first, then to float.
FALLBACKS = ("float", "int8", "fp16", "bf16")
#: Bits each dtype keeps, to tell which is wider (float: 32).
DTYPE_BITS = {"int4": 4, "int8": 8, "fp16": 16, "bf16": 16, FLOAT: 32}

#: Layer types that have a quantized replacement (class names of ``torch.nn``).
SUPPORTED_TYPES = (
    "Linear",
    "Conv1d",
    "Conv2d",
    "Conv3d",
    "ConvTranspose1d",
    "ConvTranspose2d",
    "Embedding",
    "LSTM",
    "GRU",
    "MultiheadAttention",
    "NonDynamicallyQuantizableLinear",
)

_CHOICES = {
    "dtype": DTYPES,
    "mode": MODES,
    "scheme": SCHEMES,
    "granularity": GRANULARITIES,
    "observer": OBSERVERS,
    "histogram_method": HISTOGRAM_METHODS,
    "on_failure": ON_FAILURE,
    "fallback": FALLBACKS,
    "algorithm": ALGORITHMS,
}


def _invalid(key: str, problem: str, rule: str | None = None) -> ConfigError:
    """The ConfigError ``key: problem`` with both kept as fields; ``rule`` (default: the problem)
    is what was broken, said without the value given."""
    return ConfigError(f"{key}: {problem}", key=key, problem=problem, rule=rule or problem)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def canonical_choice(value: Any) -> Any:
    """The spelling QuantConfig keeps for a choice: underscores (``per_channel``) and any case accepted."""
    if isinstance(value, str):
        return value.strip().lower().replace("_", "-")
    return value


def is_cast_dtype(dtype: str) -> bool:
    """Whether ``dtype`` is a plain cast (fp16, bf16), in any spelling."""
    return canonical_choice(dtype) in CAST_DTYPES


def needs_calibration(dtype: str, mode: str) -> bool:
    """Whether a run with ``dtype`` and ``mode`` needs calibration data: static mode, unless a cast."""
    return canonical_choice(mode) == "static" and not is_cast_dtype(dtype)


def algorithm_problem(option: str, dtype: str, mode: str, granularity: str = "per-channel") -> str | None:
    """Why ``option`` (``gptq``, ``hqq``, ``smoothquant`` or ``bias_correction``) does not apply to
    a run with these settings, said for a user; None when it applies.  The settings panel greys an
    option out with this reason, and QuantConfig refuses the same combinations."""
    dtype, mode, granularity = canonical_choice(dtype), canonical_choice(mode), canonical_choice(granularity)
    if option == "gptq":
        if dtype not in ("int8", "int4"):
            return "GPTQ rounds int8 and int4 weights; casts have nothing to round"
        if mode != "weight-only":
            return "GPTQ needs mode weight-only"
        if granularity == "per-tensor":
            return "GPTQ needs per-channel or per-group scales"
        return None
    if option == "hqq":
        if dtype not in ("int8", "int4"):
            return "HQQ fits int8 and int4 scales; casts have none"
        if granularity == "per-tensor":
            return "HQQ needs per-channel or per-group scales"
        return None
    if option == "smoothquant":
        if dtype != "int8" or mode not in ("static", "dynamic"):
            return "SmoothQuant balances int8 activations: it needs int8 with mode static or dynamic"
        return None
    if option == "bias_correction":
        if dtype not in ("int8", "int4") or mode not in ("weight-only", "static"):
            return "bias correction needs int8 or int4 with mode weight-only or static"
        return None
    raise ValueError(f"unknown option {option!r}")


#: How each algorithm is named to a user.
ALGORITHM_NAMES = {"rtn": "round to nearest", "gptq": "GPTQ", "hqq": "HQQ"}


def describe_algorithm(settings: dict[str, Any] | None) -> str:
    """``GPTQ (damp 0.01, act order) + SmoothQuant 0.5 + bias correction`` from a report's
    ``algorithm`` dict (QuantConfig.algorithm_settings(); an old report has none: round to nearest).

    Free of torch: the CLI's result line and the window's run summary both say it."""
    settings = {**ALGORITHM_DEFAULTS, **(settings or {})}
    name = str(settings["algorithm"])
    options = []
    if name == "gptq":
        options.append(f"damp {settings['gptq_damp']:g}")
        if settings["gptq_act_order"]:
            options.append("act order")
        if settings["gptq_block_size"] != ALGORITHM_DEFAULTS["gptq_block_size"]:
            options.append(f"block {settings['gptq_block_size']}")
    elif name == "hqq":
        options.append(f"{settings['hqq_iterations']} iterations")
    text = ALGORITHM_NAMES.get(name, name) + (f" ({', '.join(options)})" if options else "")
    if settings["smoothquant_alpha"] is not None:
        text += f" + SmoothQuant {settings['smoothquant_alpha']:g}"
    if settings["bias_correction"]:
        text += " + bias correction"
    return text


def needs_samples(config: QuantConfig) -> bool:
    """Whether a run with ``config`` needs calibration samples: static mode, GPTQ, SmoothQuant or
    bias correction."""
    return (
        config.needs_calibration
        or config.algorithm == "gptq"
        or config.smoothquant_alpha is not None
        or config.bias_correction
    )


# -- layer name patterns (QuantConfig.include / exclude) -----------------------------------------
def name_matcher(pattern: str) -> Callable[[str], bool]:
    """A test of qualified module names: ``pattern`` is a glob (``encoder.*.fc1``) or, after ``re:``,
    a regular expression on the whole name; a match on a container covers everything inside it
    (``head`` matches ``head.fc``).  Raises ConfigError for a bad regular expression."""
    if pattern.startswith("re:"):
        try:
            rx = re.compile(pattern[3:])
        except re.error as exc:
            raise ConfigError(f"pattern {pattern!r}: not a valid regular expression ({exc})") from None

        def test(name: str) -> bool:
            return rx.fullmatch(name) is not None
    else:

        def test(name: str) -> bool:
            return fnmatch.fnmatchcase(name, pattern)

    def match(name: str) -> bool:
        parts = name.split(".")
        return any(test(".".join(parts[: i + 1])) for i in range(len(parts)))

    return match


# -- checkpoint files (what load_model reads, by how the name ends, in any case) ------------------
TORCH_CHECKPOINT_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt")
SAFETENSORS_SUFFIX = ".safetensors"
SAFETENSORS_INDEX_SUFFIX = ".safetensors.index.json"
CHECKPOINT_SUFFIXES = (*TORCH_CHECKPOINT_SUFFIXES, SAFETENSORS_SUFFIX, SAFETENSORS_INDEX_SUFFIX)


def is_plain_name(pattern: str) -> bool:
    """Whether ``pattern`` names one module (no glob characters, no ``re:``): such an override beats patterns."""
    return not pattern.startswith("re:") and not any(c in pattern for c in "*?[")


def checkpoint_suffix(name: str) -> str | None:
    """The checkpoint suffix a file name ends with (the longest, as spelled in CHECKPOINT_SUFFIXES);
    None when it is no checkpoint."""
    lower = name.lower()
    for suffix in sorted(CHECKPOINT_SUFFIXES, key=len, reverse=True):
        if lower.endswith(suffix):
            return suffix
    return None


@dataclass
class QuantConfig:
    """What to quantize and how.  Field names and values match DESIGN.md §5.

    ``layers``: when not None, exactly these qualified module names are
    quantized (the GUI's ticked boxes); type and pattern rules then only
    explain why the others were skipped.
    """

    dtype: str = "int8"
    mode: str = "dynamic"
    scheme: str = "symmetric"
    granularity: str = "per-channel"
    group_size: int = 128
    observer: str = "minmax"
    include_types: list[str] | None = None
    exclude_types: list[str] = field(default_factory=list)
    include: list[str] = field(default_factory=list)
    exclude: list[str] = field(default_factory=list)
    layers: list[str] | None = None
    on_failure: str = "error"
    min_output_sqnr_db: float | None = None
    # Observer knobs.
    percentile: float = 99.99
    moving_average_constant: float = 0.01
    histogram_bins: int = 2048
    histogram_method: str = "mse"
    # Layers below this weight or output SQNR get a warning in the report.
    warn_layer_sqnr_db: float = 20.0
    #: Validation runs on at most this many samples: each costs one float and one quantized forward,
    #: and the first two the save → load → run round trip too (docs/architecture.md, Validation).
    validation_samples: int = DEFAULT_VALIDATION_SAMPLES
    #: Per-layer settings: ``{name or pattern: {field: value}}`` over OVERRIDE_FIELDS; dtype
    #: ``"float"`` keeps a layer float.  An exact name beats a pattern, a later pattern an earlier one.
    layer_overrides: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: Automatic fallback: keep the fewest layers float (or wider, see ``fallback``) that reach
    #: this output SQNR and/or keep the task metric's drop within this.
    target_output_sqnr_db: float | None = None
    target_metric_drop: float | None = None
    #: The first rung a layer climbs to when the target needs it: ``float``, or a wider dtype
    #: (``int8``: int4 → int8 → float).
    fallback: str = "float"
    #: How weights are rounded (ALGORITHMS); GPTQ's damping (a fraction of the mean Hessian
    #: diagonal), column order by decreasing Hessian diagonal, and columns per lazy block update.
    algorithm: str = "rtn"
    gptq_damp: float = 0.01
    gptq_act_order: bool = False
    gptq_block_size: int = 128
    #: HQQ: iterations of its half-quadratic solver (a fixed number: the result is deterministic).
    hqq_iterations: int = 20
    #: SmoothQuant migration strength in (0, 1] for int8 static/dynamic Linear layers; None: off.
    smoothquant_alpha: float | None = None
    #: Subtract each Conv/Linear output's mean quantization shift, measured on calibration samples.
    bias_correction: bool = False
    #: Where calibration, the algorithms and quantization compute: ``auto`` (the first CUDA device
    #: when there is one, else the CPU), ``cpu``, ``cuda`` or ``cuda:N`` (mono_quant_core.devices).
    device: str = "auto"
    #: Fold each BatchNorm that reads only a convolution's output into that convolution before
    #: quantizing (on a copy; the BatchNorm becomes an identity: mono_quant_core.folding).
    fold_batchnorm: bool = False

    def __post_init__(self) -> None:
        for name in _CHOICES:
            setattr(self, name, canonical_choice(getattr(self, name)))
        for name in ("include_types", "exclude_types", "include", "exclude", "layers"):
            value = getattr(self, name)
            if isinstance(value, str):
                setattr(self, name, [value])
            elif value is not None:
                setattr(self, name, list(value))
        self.validate()

    # -- checks -----------------------------------------------------------------
    def validate(self) -> None:
        for name, allowed in _CHOICES.items():
            value = getattr(self, name)
            if value not in allowed:
                raise _invalid(name, f"{value!r} is not allowed; choose one of {', '.join(allowed)}")
        if not isinstance(self.group_size, int) or self.group_size < 2 or self.group_size % 2:
            raise _invalid("group_size", f"{self.group_size!r} must be an even integer >= 2")
        if self.granularity == "per-group" and self.dtype not in ("int8", "int4"):
            raise _invalid("granularity", "per-group applies to int8 and int4 only")
        if self.dtype == "int4" and self.mode != "weight-only":
            raise _invalid(
                "mode", f"int4 is weight-only (got mode={self.mode!r}); set mode to weight-only", "int4 is weight-only"
            )
        if self.dtype in ("int8", "int4") and self.mode == "dynamic" and self.granularity == "per-group":
            raise _invalid("granularity", "per-group needs mode weight-only")
        if self.mode == "static" and self.granularity == "per-group":
            raise _invalid("granularity", "per-group needs mode weight-only")
        if not 0.0 < float(self.percentile) <= 100.0:
            raise _invalid("percentile", f"{self.percentile!r} must be in (0, 100]")
        if not 0.0 < float(self.moving_average_constant) <= 1.0:
            raise _invalid("moving_average_constant", f"{self.moving_average_constant!r} must be in (0, 1]")
        vs = self.validation_samples
        if isinstance(vs, bool) or not isinstance(vs, int) or vs < 1:
            raise _invalid("validation_samples", f"{vs!r} must be an integer >= 1")
        if int(self.histogram_bins) < 16:
            raise _invalid("histogram_bins", f"{self.histogram_bins!r} must be >= 16")
        for name in ("include_types", "exclude_types"):
            for t in getattr(self, name) or []:
                if not isinstance(t, str) or not t:
                    raise _invalid(name, f"{t!r} is not a layer type name")
        if not isinstance(self.device, str) or not DEVICE_PATTERN.fullmatch(self.device):
            raise _invalid("device", f"{self.device!r} is not a device; choose auto, cpu, cuda or cuda:N")
        if not isinstance(self.fold_batchnorm, bool):
            raise _invalid("fold_batchnorm", f"{self.fold_batchnorm!r} must be true or false")
        self._validate_targets()
        self._validate_algorithms()
        self._validate_overrides()

    def _validate_algorithms(self) -> None:
        if self.algorithm != "rtn":
            problem = algorithm_problem(self.algorithm, self.dtype, self.mode, self.granularity)
            if problem is not None:
                raise _invalid("algorithm", f"{self.algorithm}: {problem}", problem)
        if not _is_number(self.gptq_damp) or not self.gptq_damp > 0:
            raise _invalid("gptq_damp", f"{self.gptq_damp!r} must be a number > 0")
        if not isinstance(self.gptq_act_order, bool):
            raise _invalid("gptq_act_order", f"{self.gptq_act_order!r} must be true or false")
        for name in ("gptq_block_size", "hqq_iterations"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise _invalid(name, f"{value!r} must be an integer >= 1")
        alpha = self.smoothquant_alpha
        if alpha is not None:
            if not _is_number(alpha) or not 0.0 < alpha <= 1.0:
                raise _invalid("smoothquant_alpha", f"{alpha!r} must be in (0, 1], or None for off")
            problem = algorithm_problem("smoothquant", self.dtype, self.mode, self.granularity)
            if problem is not None:
                raise _invalid("smoothquant_alpha", problem)
        if not isinstance(self.bias_correction, bool):
            raise _invalid("bias_correction", f"{self.bias_correction!r} must be true or false")
        if self.bias_correction:
            problem = algorithm_problem("bias_correction", self.dtype, self.mode, self.granularity)
            if problem is not None:
                raise _invalid("bias_correction", problem)

    def algorithm_settings(self) -> dict[str, Any]:
        """The algorithm options of this run that are not at their default, with ``algorithm``
        always: what the report and the file record."""
        settings = {"algorithm": self.algorithm}
        for name, default in ALGORITHM_DEFAULTS.items():
            value = getattr(self, name)
            if name != "algorithm" and value != default:
                settings[name] = value
        return settings

    def _validate_targets(self) -> None:
        for name in ("target_output_sqnr_db", "target_metric_drop"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float)) or value != value):
                raise _invalid(name, f"{value!r} must be a number or None")
        if self.fallback != FLOAT and DTYPE_BITS[self.fallback] <= DTYPE_BITS[self.dtype]:
            raise _invalid(
                "fallback",
                f"{self.fallback} is not wider than dtype {self.dtype}; choose a wider dtype or float",
                "the fallback must be wider than the dtype",
            )

    def _validate_overrides(self) -> None:
        if not isinstance(self.layer_overrides, dict):
            raise _invalid("layer_overrides", "must map layer names or patterns to settings")
        for pattern, fields in self.layer_overrides.items():
            where = f"layer_overrides[{pattern!r}]"
            if not isinstance(pattern, str) or not pattern:
                raise _invalid("layer_overrides", f"{pattern!r} is not a layer name or pattern")
            try:
                name_matcher(pattern)
            except ConfigError as exc:
                raise _invalid(
                    "layer_overrides", str(exc), "a pattern must be a glob or a valid re: expression"
                ) from None
            if not isinstance(fields, dict) or not fields:
                raise _invalid(where, f"{fields!r} must be a non-empty table of {', '.join(OVERRIDE_FIELDS)}")
            unknown = [k for k in fields if k.replace("-", "_") not in OVERRIDE_FIELDS]
            if unknown:
                raise _invalid(where, f"{unknown[0]!r} cannot be set per layer; use {', '.join(OVERRIDE_FIELDS)}")
            dtype = canonical_choice(fields.get("dtype", self.dtype))
            if dtype not in (*DTYPES, FLOAT):
                raise _invalid(where, f"dtype {dtype!r} is not allowed; choose one of {', '.join((*DTYPES, FLOAT))}")
            try:
                self._with_fields(fields)
            except ConfigError as exc:
                raise _invalid(where, exc.problem or str(exc), exc.rule) from None

    # -- per-layer settings -----------------------------------------------------------
    def _with_fields(self, fields: dict[str, Any]) -> QuantConfig | None:
        """This config with ``fields`` of an override applied; None for dtype ``float``."""
        changes = {k.replace("-", "_"): canonical_choice(v) for k, v in fields.items()}
        if changes.get("dtype") == FLOAT:
            return None
        if changes.get("dtype") == "int4" and "mode" not in changes:
            changes["mode"] = "weight-only"  # int4 is weight-only: an override of the dtype alone means that
        if is_cast_dtype(changes.get("dtype", self.dtype)) and self.granularity == "per-group":
            changes.setdefault("granularity", "per-channel")  # a cast has no groups
        dtype, mode = changes.get("dtype", self.dtype), changes.get("mode", self.mode)
        granularity = changes.get("granularity", self.granularity)
        # The run's algorithms apply to the layers they fit; a layer set otherwise is rounded to nearest.
        if self.algorithm != "rtn" and algorithm_problem(self.algorithm, dtype, mode, granularity):
            changes["algorithm"] = "rtn"
        if self.smoothquant_alpha is not None and algorithm_problem("smoothquant", dtype, mode, granularity):
            changes["smoothquant_alpha"] = None
        if self.bias_correction and algorithm_problem("bias_correction", dtype, mode, granularity):
            changes["bias_correction"] = False
        return dataclasses.replace(
            self, layer_overrides={}, target_output_sqnr_db=None, target_metric_drop=None, fallback=FLOAT, **changes
        )

    def override_for(self, name: str) -> dict[str, Any]:
        """The override fields that apply to layer ``name``: patterns in order (a later one wins
        field by field), then an exact name on top."""
        merged: dict[str, Any] = {}
        exact: dict[str, Any] = {}
        for pattern, fields in self.layer_overrides.items():
            if pattern == name:
                exact = fields
            elif not is_plain_name(pattern) and name_matcher(pattern)(name):
                merged.update(fields)
            elif is_plain_name(pattern) and name.startswith(pattern + "."):
                merged.update(fields)  # a container's name covers its layers, below an exact name
        merged.update(exact)
        return merged

    def layer_config(self, name: str) -> QuantConfig | None:
        """The settings of layer ``name`` after ``layer_overrides``; None when it stays float."""
        fields = self.override_for(name)
        if not fields:
            return self
        try:
            return self._with_fields(fields)
        except ConfigError as exc:
            raise _invalid(f"layer_overrides for {name}", exc.problem or str(exc), exc.rule) from None

    @property
    def is_cast(self) -> bool:
        return is_cast_dtype(self.dtype)

    @property
    def needs_calibration(self) -> bool:
        return needs_calibration(self.dtype, self.mode)

    # -- conversion ---------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> QuantConfig:
        """Build from a mapping with dashed or underscored keys; unknown keys are an error."""
        known = {f.name for f in dataclasses.fields(cls)}
        kwargs: dict[str, Any] = {}
        for key, value in data.items():
            name = key.replace("-", "_")
            if name not in known:
                raise _invalid(key, f"unknown setting; known: {', '.join(sorted(known))}")
            kwargs[name] = value
        return cls(**kwargs)

    def replace(self, **changes: Any) -> QuantConfig:
        return dataclasses.replace(self, **changes)
