"""Run one calibration batch through a model and describe what came out."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..batches import as_call_args
from ..errors import CalibrationError


def run_batch(model: nn.Module, batch: Any, path: Path) -> Any:
    """``model(*args, **kwargs)`` under ``torch.inference_mode``; the model's own message on failure."""
    args, kwargs = as_call_args(batch)
    try:
        with torch.inference_mode():
            return model(*args, **kwargs)
    except (RuntimeError, ValueError, TypeError, IndexError, KeyError, AttributeError, AssertionError) as exc:
        raise CalibrationError(
            f"{path.name}: the model rejected this sample ({_shapes(batch)}): {type(exc).__name__}: {exc}"
        ) from exc


def describe_output(output: Any) -> tuple[str, list[tuple[str, list[int] | None, str]]]:
    """``(structure, [(key, shape, dtype)])``; structure is tensor, tuple, list, dict or ModelOutput-like."""
    entries: list[tuple[str, list[int] | None, str]] = []
    _walk(output, "", entries)
    if isinstance(output, torch.Tensor):
        return "tensor", entries
    if _model_output_like(output):
        return f"ModelOutput ({type(output).__name__})", entries
    if isinstance(output, Mapping):
        return "dict", entries
    if isinstance(output, tuple):
        return "tuple", entries
    return type(output).__name__, entries


def _model_output_like(value: Any) -> bool:
    return hasattr(value, "keys") and hasattr(value, "to_tuple")


def _walk(value: Any, key: str, out: list) -> None:
    if isinstance(value, torch.Tensor):
        out.append((key, list(value.shape), str(value.dtype).removeprefix("torch.")))
    elif _model_output_like(value) or isinstance(value, Mapping):
        for k in value:
            _walk(value[k], f"{key}.{k}" if key else str(k), out)
    elif isinstance(value, (tuple, list)):
        for i, item in enumerate(value):
            _walk(item, f"{key}.{i}" if key else str(i), out)
    else:
        out.append((key, None, type(value).__name__))


def _shapes(batch: Any) -> str:
    from .calibration_files import batch_items

    parts = [
        f"{k + ': ' if k else ''}{list(t.shape)} {str(t.dtype).removeprefix('torch.')}" for k, t in batch_items(batch)
    ]
    return "input " + ", ".join(parts)
