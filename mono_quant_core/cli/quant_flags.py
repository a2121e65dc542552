"""The model, calibration and quantization flags ``quantize`` and ``sensitivity`` share, and the
QuantConfig they build (errors name the flag)."""

from __future__ import annotations

import argparse
from typing import Any

from .. import config as cfg
from ..config import QuantConfig
from ..errors import ConfigError
from ..jobs.schema import failing_override
from .arguments import canonical, natural_int, positive_int

#: QuantConfig fields set by flags, and the flag of each (the others keep their defaults).
CONFIG_FLAGS = {
    "dtype": "--dtype",
    "mode": "--mode",
    "scheme": "--scheme",
    "granularity": "--granularity",
    "group_size": "--group-size",
    "observer": "--observer",
    "include_types": "--include-type",
    "exclude_types": "--exclude-type",
    "include": "--include",
    "exclude": "--exclude",
    "layers": "--layers",
    "layer_overrides": "--override",
    "on_failure": "--on-failure",
    "min_output_sqnr_db": "--min-output-sqnr",
    "validation_samples": "--validation-samples",
    "target_output_sqnr_db": "--target-sqnr",
    "target_metric_drop": "--target-metric-drop",
    "fallback": "--fallback",
    "algorithm": "--algorithm",
    "gptq_damp": "--gptq-damp",
    "gptq_act_order": "--gptq-act-order",
    "gptq_block_size": "--gptq-block-size",
    "hqq_iterations": "--hqq-iterations",
    "smoothquant_alpha": "--smoothquant-alpha",
    "bias_correction": "--bias-correction",
    "device": "--device",
    "fold_batchnorm": "--fold-batchnorm",
}


def input_flags(p: argparse.ArgumentParser) -> None:
    """``--script --entry --entry-kwargs --checkpoint --non-strict`` and the calibration flags."""
    model = p.add_argument_group("model")
    model.add_argument("--script", required=True, metavar="FILE.py", help="the script defining the model")
    model.add_argument("--entry", metavar="NAME", help="factory function, class or instance in the script")
    model.add_argument("--entry-kwargs", metavar="JSON", help="keyword arguments for the entry, e.g. '{\"width\": 8}'")
    model.add_argument("--checkpoint", metavar="FILE", help=".pt/.pth/.bin/.ckpt/.safetensors weights")
    model.add_argument(
        "--non-strict", action="store_true", help="load a checkpoint with missing or unexpected keys (they are listed)"
    )
    calib = p.add_argument_group("calibration")
    calib.add_argument("--calib", metavar="DIR", help="folder of calibration tensors (required by --mode static)")
    calib.add_argument("--samples", type=positive_int, metavar="N", help="use N calibration files")
    calib.add_argument("--seed", type=natural_int, metavar="N", help="pick the N files at random with this seed")
    calib.add_argument(
        "--skip-unusable",
        action="store_true",
        help="leave out calibration files that cannot be used (the report lists them) instead of failing",
    )


def quantization_flags(p: argparse.ArgumentParser) -> None:
    """What to quantize and how: dtype, mode, ..., the layer rules and ``--override``."""
    quant = p.add_argument_group("quantization")
    for flag, choices, default in (
        ("--dtype", cfg.DTYPES, "int8"),
        ("--mode", cfg.MODES, "dynamic"),
        ("--scheme", cfg.SCHEMES, "symmetric"),
        ("--granularity", cfg.GRANULARITIES, "per-channel"),
    ):
        quant.add_argument(flag, type=canonical, choices=choices, help=f"default {default}")
    quant.add_argument("--group-size", type=positive_int, metavar="N", help="per-group size (default 128)")
    quant.add_argument("--observer", type=canonical, choices=cfg.OBSERVERS, help="default minmax")
    for flag, dest, what in (
        ("--include-type", "include_types", "TYPE"),
        ("--exclude-type", "exclude_types", "TYPE"),
        ("--include", "include", "GLOB"),
        ("--exclude", "exclude", "GLOB"),
        ("--layers", "layers", "NAME"),
    ):
        quant.add_argument(flag, dest=dest, nargs="+", action="extend", metavar=what)
    quant.add_argument(
        "--override",
        dest="overrides",
        action="append",
        metavar="PATTERN:FIELD=VALUE[,...]",
        help=f"per-layer settings ({', '.join(cfg.OVERRIDE_FIELDS)}; dtype float keeps a layer float), "
        "e.g. 'head.*:dtype=int8'; repeatable, a later pattern wins, an exact name beats patterns",
    )


def algorithm_flags(p: argparse.ArgumentParser) -> None:
    """How weights are rounded (``--algorithm``) and the options of each algorithm."""
    algo = p.add_argument_group("algorithm")
    algo.add_argument(
        "--algorithm",
        type=canonical,
        choices=cfg.ALGORITHMS,
        help="rtn: round to nearest (default); gptq: Hessian-guided rounding, needs --calib, slower; "
        "hqq: data-free half-quadratic fit of the scales",
    )
    algo.add_argument(
        "--gptq-damp",
        type=float,
        metavar="X",
        help="GPTQ damping, a fraction of the mean Hessian diagonal (default 0.01)",
    )
    algo.add_argument(
        "--gptq-act-order",
        action="store_true",
        default=None,
        help="GPTQ: round columns in order of decreasing Hessian diagonal",
    )
    algo.add_argument(
        "--gptq-block-size", type=positive_int, metavar="N", help="GPTQ columns per lazy update (default 128)"
    )
    algo.add_argument("--hqq-iterations", type=positive_int, metavar="N", help="HQQ solver iterations (default 20)")
    algo.add_argument(
        "--smoothquant-alpha",
        type=float,
        metavar="A",
        help="SmoothQuant with migration strength A in (0, 1] (int8 static/dynamic; needs --calib)",
    )
    algo.add_argument(
        "--bias-correction",
        action="store_true",
        default=None,
        help="correct each layer's mean output shift, measured on --calib samples",
    )
    algo.add_argument(
        "--device",
        metavar="DEVICE",
        help="where to compute: auto (a CUDA GPU when there is one, default), cpu, cuda or cuda:N; "
        "the file is the same either way",
    )
    fold_flag(algo)


def fold_flag(p: argparse._ActionsContainer) -> None:
    """``--fold-batchnorm`` (quantize, and sensitivity, which must measure the model quantize writes)."""
    p.add_argument(
        "--fold-batchnorm",
        action="store_true",
        default=None,
        help="fold each BatchNorm that follows a convolution into it before quantizing",
    )


def metric_flag(p: argparse._ActionsContainer) -> None:
    """``--metric NAME``: a function of the model script, run on the float and the quantized model."""
    p.add_argument(
        "--metric",
        metavar="NAME",
        help="task metric: the script's function NAME(model) -> number (e.g. evaluate), "
        "measured on the float and the quantized model",
    )


def validation_flags(p: argparse.ArgumentParser) -> None:
    """``quantize``'s checks and accuracy targets (with ``--metric``)."""
    check = p.add_argument_group("validation")
    check.add_argument("--on-failure", type=canonical, choices=cfg.ON_FAILURE, help="default error")
    check.add_argument(
        "--min-output-sqnr",
        dest="min_output_sqnr_db",
        type=float,
        metavar="DB",
        help="fail (see --on-failure) when the output SQNR is lower",
    )
    check.add_argument(
        "--validation-samples",
        dest="validation_samples",
        type=positive_int,
        metavar="N",
        help=f"validate on at most N samples (default {cfg.DEFAULT_VALIDATION_SAMPLES}; each costs one float "
        "and one quantized forward, the first two the file round trip too)",
    )
    metric_flag(check)
    check.add_argument(
        "--target-sqnr",
        dest="target_output_sqnr_db",
        type=float,
        metavar="DB",
        help="keep the fewest layers float (or wider, --fallback) that reach this output SQNR",
    )
    check.add_argument(
        "--target-metric-drop",
        dest="target_metric_drop",
        type=float,
        metavar="X",
        help="keep the fewest layers float (or wider) that keep the metric within X of the float model's "
        "(the metric: --metric, else the script's evaluate)",
    )
    check.add_argument(
        "--fallback",
        type=canonical,
        choices=cfg.FALLBACKS,
        help="what a layer kept for accuracy becomes first (default float; int8: int4 -> int8 -> float)",
    )


def parse_override(text: str) -> tuple[str, dict[str, Any]]:
    """``'head.*:dtype=int8,group_size=64'`` -> ``("head.*", {"dtype": "int8", "group_size": 64})``.

    The pattern is everything before the last ``:`` (a ``re:`` pattern may hold colons).
    """
    pattern, sep, rest = text.rpartition(":")
    if not sep or not pattern:
        raise _override_error(text, "expected PATTERN:FIELD=VALUE, e.g. 'head.*:dtype=int8'")
    fields: dict[str, Any] = {}
    for item in rest.split(","):
        name, eq, value = (part.strip() for part in item.partition("="))
        name = name.replace("-", "_")
        if not eq or not name or not value:
            raise _override_error(text, f"{item.strip()!r} is not FIELD=VALUE")
        if name not in cfg.OVERRIDE_FIELDS:
            raise _override_error(text, f"{name!r} cannot be set per layer; use {', '.join(cfg.OVERRIDE_FIELDS)}")
        if name == "group_size":
            try:
                fields[name] = int(value)
            except ValueError:
                raise _override_error(text, f"group_size {value!r} is not an integer") from None
        else:
            fields[name] = cfg.canonical_choice(value)
    return pattern, fields


def config_from_args(args: argparse.Namespace) -> QuantConfig:
    """The QuantConfig the flags describe; errors name the flag (``--override`` errors also its text)."""
    given = {name: getattr(args, name, None) for name in CONFIG_FLAGS}
    settings: dict[str, Any] = {name: value for name, value in given.items() if value is not None}
    texts: dict[str, str] = {}
    overrides: dict[str, dict[str, Any]] = {}
    for text in getattr(args, "overrides", None) or []:
        pattern, fields = parse_override(text)
        # A repeated pattern adds to its fields and moves last: a later pattern beats earlier ones.
        overrides[pattern] = {**overrides.pop(pattern, {}), **fields}
        texts[pattern] = text
    settings.pop("layer_overrides", None)
    if overrides:
        settings["layer_overrides"] = overrides
    try:
        return QuantConfig(**settings)
    except ConfigError as exc:
        culprit = failing_override(settings, overrides)
        if culprit is not None and culprit[1].problem is not None:
            raise _override_error(texts[culprit[0]], culprit[1].problem) from None
        if exc.key is None or exc.problem is None:
            raise
        flag = CONFIG_FLAGS.get(exc.key, exc.key)
        raise ConfigError(f"{flag}: {exc.problem}", key=flag, problem=exc.problem) from None


def _override_error(text: str, problem: str) -> ConfigError:
    return ConfigError(f"--override {text!r}: {problem}", key="--override", problem=problem)
