"""Reading quantized files: metadata (cheap) and tensors, with errors that name the file."""

from __future__ import annotations

import os
from typing import Any

import torch

from ..errors import QuantizedFileError
from . import content_hash, pt_file, safetensors_file
from .metadata import METADATA_KEY, parse


def sniff_format(path: str) -> str:
    """``"pt"`` (zip or legacy pickle) or ``"safetensors"``, from the first bytes, not the name."""
    try:
        with open(path, "rb") as f:
            head = f.read(9)
    except FileNotFoundError as exc:
        raise QuantizedFileError(f"{path}: no such file") from exc
    except OSError as exc:
        raise QuantizedFileError(f"{path}: cannot read the file: {exc.strerror or exc}") from exc
    if not head:
        raise QuantizedFileError(f"{path}: the file is empty")
    if head[8:9] == b"{":  # safetensors: u64 header length, then the JSON header
        return "safetensors"
    if head.startswith(b"PK\x03\x04") or head[:1] == b"\x80":
        return "pt"
    return "safetensors"


def _foreign(path: str, fmt: str) -> QuantizedFileError:
    plain = "safetensors.torch.load_file(path)" if fmt == "safetensors" else "torch.load(path, weights_only=True)"
    return QuantizedFileError(
        f"{path}: a plain {'safetensors' if fmt == 'safetensors' else 'PyTorch'} file, not written by "
        f"mono-quant (it has no '{METADATA_KEY}' metadata); load it plainly with {plain}, "
        "or use it as a float checkpoint"
    )


def _safetensors_metadata(path: str) -> dict[str, Any]:
    return read_summary(path)[1]


def read_summary(path: str | os.PathLike) -> tuple[str, dict[str, Any], dict[str, tuple[str, list[int]]]]:
    """``(format, metadata, {name: (dtype, shape)})`` of a quantized file, reading it once
    (a ``.safetensors`` file: its header only)."""
    path = os.fspath(path)
    fmt = sniff_format(path)
    if fmt == "safetensors":
        header = safetensors_file.read_header(path)
        text = (header.get("__metadata__") or {}).get(METADATA_KEY)
        table = {k: (v["dtype"], list(v["shape"])) for k, v in header.items() if k != "__metadata__"}
    else:
        tensors, text = pt_file.read(path)
        table = {k: (_short_dtype(v.dtype), list(v.shape)) for k, v in tensors.items()}
    if not isinstance(text, str):
        raise _foreign(path, fmt)
    return fmt, parse(text, path), table


def read_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """The parsed ``mono_quant`` metadata of a quantized file (a ``.safetensors`` file: its header only)."""
    return read_summary(path)[1]


def read_file(path: str | os.PathLike) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """(metadata, tensors by state-dict name) of a quantized file."""
    path = os.fspath(path)
    if sniff_format(path) == "pt":
        tensors, text = pt_file.read(path)
        if text is None:
            raise _foreign(path, "pt")
        return parse(text, path), tensors
    meta = _safetensors_metadata(path)
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        tensors = load_file(path)
    except (SafetensorError, OSError, ValueError, RuntimeError, TypeError) as exc:
        raise QuantizedFileError(f"{path}: corrupt safetensors file ({exc})") from exc
    return meta, tensors


def read_verified(path: str | os.PathLike) -> tuple[dict[str, Any], dict[str, torch.Tensor], int | None]:
    """(metadata, tensors, number of tensors checked) after checking the content hash.

    Raises ``ContentHashError`` (a ``QuantizedFileError``) naming the file and the
    first tensor that differs; the count is None for a file without hashes.
    """
    path = os.fspath(path)
    meta, tensors = read_file(path)
    return meta, tensors, content_hash.verify(meta, tensors, path)


def _short_dtype(dtype: torch.dtype) -> str:
    return {v: k for k, v in safetensors_file.TORCH_DTYPES.items()}.get(dtype, str(dtype))
