"""How one calibration batch is passed to ``forward`` (DESIGN.md §3).

A tensor is one positional argument, a list or tuple of tensors are positional
arguments, a dict of tensors are keyword arguments.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # torch-free at run time
    import torch

#: ``(args, kwargs)`` of one call of ``forward``.
CallArgs = tuple[tuple[Any, ...], dict[str, Any]]


def as_call_args(batch: Any) -> CallArgs:
    """Return ``(args, kwargs)`` for ``model(*args, **kwargs)``."""
    args = getattr(batch, "args", None)
    kwargs = getattr(batch, "kwargs", None)
    if isinstance(args, tuple) and isinstance(kwargs, dict):
        return args, kwargs  # an already-normalised Sample
    if isinstance(batch, Mapping):
        return (), dict(batch)
    if isinstance(batch, (list, tuple)):
        return tuple(batch), {}
    return (batch,), {}


def move_batch(args: tuple[Any, ...], kwargs: dict[str, Any], device: torch.device | str) -> CallArgs:
    """Move every tensor of a batch to ``device`` (leaves other values alone)."""

    def mv(v: Any) -> Any:
        return v.to(device) if hasattr(v, "to") and hasattr(v, "device") else v

    return tuple(mv(a) for a in args), {k: mv(v) for k, v in kwargs.items()}


def sample_name(samples: object, i: int, role: str = "calibration") -> str:
    """``calibration sample 3`` (``role``: calibration or validation), with the file name when the
    samples come from a folder (their ``.files``): errors name the sample the model failed on."""
    files = getattr(samples, "files", None)
    try:
        file = files[i] if files is not None else None
    except (IndexError, TypeError):
        file = None
    name = getattr(file, "name", file)
    return f"{role} sample {i + 1}" + (f" ({name})" if name else "")


def call_model(model: Any, batch: Any, device: torch.device | str, name: str, which: str = "the model") -> Any:
    """``model`` run on ``batch`` (moved to ``device``); any error but mono-quant's own is raised
    again as a CalibrationError that names the sample (``name``: :func:`sample_name`) and the
    model (``which``: "the quantized model", ...)."""
    from .errors import CalibrationError, MonoQuantError

    args, kwargs = move_batch(*as_call_args(batch), device)
    try:
        return model(*args, **kwargs)
    except MonoQuantError:
        raise
    except Exception as exc:  # re-raised with the sample named, the cause chained
        raise CalibrationError(f"{name}: {which} raised {type(exc).__name__}: {exc}") from exc
