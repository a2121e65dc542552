"""The ``.pt`` layout: ``torch.save`` of ``{"state_dict": {...}, "mono_quant": "<json>"}``.

Only plain containers, strings and tensors, so ``torch.load(weights_only=True)``
opens it and loading never runs pickled code.
"""

from __future__ import annotations

import pickle
from typing import IO, BinaryIO, cast

import torch

from ..errors import QuantizedFileError
from .metadata import METADATA_KEY

STATE_KEY = "state_dict"


def _own_storage(t: torch.Tensor) -> torch.Tensor:
    """``torch.save`` writes a view's whole storage; give views their own."""
    if t.untyped_storage().nbytes() != t.numel() * t.element_size() or t.storage_offset():
        return t.clone()
    return t


class _WriteRecorder:
    """Passes writes through and remembers the first one that failed."""

    def __init__(self, f: BinaryIO) -> None:
        self._f = f
        self.error: BaseException | None = None

    def write(self, data: bytes) -> int:
        try:
            return self._f.write(data)
        except BaseException as exc:
            self.error = self.error or exc
            raise

    def flush(self) -> None:
        self._f.flush()


def write(f: BinaryIO, tensors: dict[str, torch.Tensor], metadata_json: str) -> None:
    """Write the tensors (contiguous, on the CPU) and the metadata JSON string."""
    payload = {STATE_KEY: {k: _own_storage(v) for k, v in tensors.items()}, METADATA_KEY: metadata_json}
    recorder = _WriteRecorder(f)
    try:
        torch.save(payload, cast(IO[bytes], recorder))
    except BaseException:
        # torch's zip writer replaces a failed write (disk full, Ctrl-C) by its
        # own RuntimeError while closing the archive; surface the real cause.
        if recorder.error is not None:
            raise recorder.error from None
        raise


def _torch_load(path: str) -> object:
    if path.lower().endswith(".safetensors"):
        # torch.load hands paths named *.safetensors to safetensors; read the bytes as PyTorch's.
        with open(path, "rb") as f:
            return torch.load(f, map_location="cpu", weights_only=True)
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except RuntimeError as exc:
        if "mmap" not in str(exc):
            raise
    # Files in the legacy (non-zip) format cannot be memory-mapped.
    return torch.load(path, map_location="cpu", weights_only=True)


def read(path: str) -> tuple[dict[str, torch.Tensor], str | None]:
    """(state dict, metadata JSON or None when the file is a plain PyTorch file)."""
    try:
        obj = _torch_load(path)
    except pickle.UnpicklingError as exc:
        raise QuantizedFileError(
            f"{path}: not a mono-quant file: it needs pickled code to load, which mono-quant never "
            f"runs ({str(exc).splitlines()[0]})"
        ) from exc
    except (FileNotFoundError, PermissionError, IsADirectoryError) as exc:
        raise QuantizedFileError(f"{path}: cannot read the file: {exc.strerror or exc}") from exc
    except OSError as exc:  # mmap and zip reads of a damaged archive
        raise QuantizedFileError(f"{path}: truncated or corrupt PyTorch file ({exc.strerror or exc})") from exc
    except Exception as exc:
        # A damaged archive or pickle surfaces as almost any exception type from torch's
        # reader (RuntimeError, EOFError, KeyError, IndexError, UnicodeDecodeError, ...).
        why = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise QuantizedFileError(f"{path}: truncated or corrupt PyTorch file ({why})") from exc
    if isinstance(obj, dict) and METADATA_KEY in obj and not isinstance(obj[METADATA_KEY], str):
        raise QuantizedFileError(
            f"{path}: corrupt: the field '{METADATA_KEY}' is a {type(obj[METADATA_KEY]).__name__}, not a JSON string"
        )
    if not (isinstance(obj, dict) and isinstance(obj.get(METADATA_KEY), str)):
        return (obj if isinstance(obj, dict) else {}), None
    if STATE_KEY not in obj:
        raise QuantizedFileError(f"{path}: corrupt: the field '{STATE_KEY}' is missing")
    state = obj[STATE_KEY]
    if not isinstance(state, dict) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()
    ):
        raise QuantizedFileError(f"{path}: corrupt: the field '{STATE_KEY}' is not a dict of named tensors")
    return state, obj[METADATA_KEY]
