"""One calibration file = one batch: list a folder, read and check a file.

A file holds a tensor (one positional argument), a list or tuple of tensors
(positional arguments) or a dict of tensors (keyword arguments).  ``.npz``
files saved positionally (``np.savez(f, a, b)``: keys ``arr_0``, ``arr_1``…)
become a tuple.  Files are read with ``weights_only=True`` / ``allow_pickle=False``.
"""

from __future__ import annotations

import pickle
import re
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError

from ..errors import CalibrationError
from .checkpoint_files import UNREADABLE, pickled_global
from .file_damage import describe_damage
from .output_files import SKIP_REASON, file_marker

CALIBRATION_SUFFIXES = (".pt", ".pth", ".safetensors", ".npy", ".npz")

Batch = torch.Tensor | tuple[torch.Tensor, ...] | dict[str, torch.Tensor]


def natural_key(name: str) -> list:
    """Sort key putting ``x2`` before ``x10`` (case-insensitive)."""
    return [(0, int(part), "") if part.isdigit() else (1, 0, part.lower()) for part in re.split(r"(\d+)", name) if part]


def list_calibration_files(folder: Path) -> tuple[list[Path], list[Path]]:
    """Supported files directly in ``folder`` in natural order, and apart the mono-quant outputs among them.

    Outputs (recognised by their metadata: a saved result that landed in the
    folder) are never calibration samples.  Errors when no usable file is left.
    """
    if not folder.exists():
        raise CalibrationError(f"{folder}: calibration folder not found")
    if not folder.is_dir():
        raise CalibrationError(f"{folder}: not a folder; calibration data is a folder of files")
    files = [
        p
        for p in folder.iterdir()
        if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in CALIBRATION_SUFFIXES
    ]
    files.sort(key=lambda p: natural_key(p.name))
    outputs = [p for p in files if file_marker(p) is not None]
    usable = [p for p in files if p not in set(outputs)]
    if not usable:
        skipped = f" ({_skipped_note(outputs)})" if outputs else ""
        raise CalibrationError(
            f"{folder}: no calibration files{skipped}; supported: {', '.join('*' + s for s in CALIBRATION_SUFFIXES)}"
        )
    return usable, outputs


def _skipped_note(outputs: list[Path]) -> str:
    names = ", ".join(p.name for p in outputs[:5]) + (f", … and {len(outputs) - 5} more" if len(outputs) > 5 else "")
    return f"skipped {names}: " + (SKIP_REASON if len(outputs) == 1 else "mono-quant outputs")


def read_batch(path: Path) -> Batch:
    """Read one file as a batch; CalibrationError names the file on any problem."""
    batch = read_unchecked(path)
    check_finite(batch, path)
    return batch


def read_unchecked(path: Path) -> Batch:
    """Read one file as a batch without the NaN/Inf check (for previews)."""
    return _as_batch(_read_raw(path), path)


def file_size(path: Path) -> int:
    """Size in bytes, -1 when the file cannot be stat'ed."""
    try:
        return path.stat().st_size
    except OSError:
        return -1


def check_finite(batch: Batch, path: Path) -> None:
    """Raise when a floating tensor of the batch holds NaN or Inf."""
    for key, tensor in batch_items(batch):
        if tensor.is_floating_point() or tensor.is_complex():
            finite = torch.isfinite(tensor)
            if not bool(finite.all()):
                nan = int(torch.isnan(tensor).sum())
                inf = int(tensor.numel() - finite.sum()) - nan
                where = f" [{key}]" if key else ""
                raise CalibrationError(f"{path.name}{where}: contains {nan} NaN and {inf} Inf values")


def batch_items(batch: Batch) -> list[tuple[str, torch.Tensor]]:
    """``(key, tensor)`` pairs: ``""`` for a lone tensor, ``"0"``, ``"1"`` … for a tuple."""
    if isinstance(batch, dict):
        return list(batch.items())
    if isinstance(batch, tuple):
        return [(str(i), t) for i, t in enumerate(batch)]
    return [("", batch)]


def _read_raw(path: Path) -> Any:
    suffix = path.suffix.lower()
    try:
        if suffix in (".pt", ".pth"):
            return torch.load(path, map_location="cpu", weights_only=True)
        if suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        np = _numpy(path)
        if suffix == ".npy":
            return np.load(path, allow_pickle=False)
        with np.load(path, allow_pickle=False) as archive:
            return _npz_contents(archive)
    except pickle.UnpicklingError as exc:
        culprit = pickled_global(exc)
        if culprit is None:
            raise CalibrationError(f"{path.name}: unreadable: {describe_damage(path, exc)}") from exc
        raise CalibrationError(
            f"{path.name}: refused: reading it would need the pickled object {culprit}; "
            "save plain tensors with torch.save(tensor_or_list_or_dict, path)"
        ) from exc
    except FileNotFoundError as exc:
        raise CalibrationError(f"{path.name}: disappeared while reading the calibration folder") from exc
    except (*UNREADABLE, SafetensorError) as exc:
        raise CalibrationError(f"{path.name}: unreadable: {describe_damage(path, exc)}") from exc


def _npz_contents(archive: Any) -> dict | tuple:
    names = list(archive.files)
    positional = [f"arr_{i}" for i in range(len(names))]
    if sorted(names, key=natural_key) == positional:
        return tuple(archive[n] for n in positional)
    return {n: archive[n] for n in names}


def _as_batch(raw: Any, path: Path) -> Batch:
    if isinstance(raw, dict):
        if not raw:
            raise CalibrationError(f"{path.name}: holds an empty dict; a batch needs tensors")
        return {str(k): _as_tensor(v, path, str(k)) for k, v in raw.items()}
    if isinstance(raw, (list, tuple)):
        if not raw:
            raise CalibrationError(f"{path.name}: holds an empty {type(raw).__name__}; a batch needs tensors")
        return tuple(_as_tensor(v, path, str(i)) for i, v in enumerate(raw))
    return _as_tensor(raw, path, "")


def _as_tensor(value: Any, path: Path, key: str) -> torch.Tensor:
    where = f" [{key}]" if key else ""
    if isinstance(value, torch.Tensor):
        return value
    if type(value).__module__ == "numpy" and type(value).__name__ == "ndarray":
        if value.dtype.kind not in "biufc":
            raise CalibrationError(f"{path.name}{where}: holds a numpy array of {value.dtype}, not numbers")
        if not value.dtype.isnative:
            value = value.astype(value.dtype.newbyteorder("="))
        try:
            return torch.from_numpy(value)
        except TypeError as exc:
            raise CalibrationError(f"{path.name}{where}: numpy dtype {value.dtype} has no torch equivalent") from exc
    raise CalibrationError(
        f"{path.name}{where}: holds a {type(value).__name__}, not a tensor; a calibration file holds "
        "a tensor, a list/tuple of tensors or a dict of tensors"
    )


def _numpy(path: Path) -> Any:
    try:
        import numpy
    except ImportError as exc:
        raise CalibrationError(f"{path.name}: reading {path.suffix} files needs numpy (pip install numpy)") from exc
    return numpy
