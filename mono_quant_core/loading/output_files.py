"""Recognise mono-quant outputs by their metadata, so their codes are never read as float weights.

A ``.safetensors`` output carries the ``mono_quant`` entry in its header's
``__metadata__``; a ``.pt`` output is ``{"state_dict": ..., "mono_quant": "<json>"}``
(docs/file-format.md).  Everything here reads with ``weights_only=True`` or the
safetensors header only: recognising a file never runs pickled code.
"""

from __future__ import annotations

import json
import pickle
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open

from ..config import QuantConfig
from ..errors import ConfigError, QuantizedCheckpointError
from ..serialization.metadata import METADATA_KEY

#: How a legacy (non-zip) ``.pt`` file is searched for the marker before it is loaded.
PEEK_BYTES = 64 << 20
#: The reason a calibration folder's preview gives for a skipped output.
SKIP_REASON = "a mono-quant output"

_MARKER = METADATA_KEY.encode()


def mapping_marker(obj: Any) -> str | None:
    """The metadata JSON of what ``torch.load`` returned for a ``.pt`` output, else None."""
    if isinstance(obj, Mapping):
        text = obj.get(METADATA_KEY)
        if isinstance(text, str):
            return text
    return None


def safetensors_marker(file: Path) -> str | None:
    """The metadata JSON in a ``.safetensors`` file's header, else None (also for unreadable files)."""
    try:
        with safe_open(str(file), framework="pt", device="cpu") as f:
            return header_marker(f.metadata())
    except (OSError, ValueError, RuntimeError, SafetensorError):
        return None


def header_marker(metadata: Mapping[str, str] | None) -> str | None:
    """The metadata JSON among a safetensors header's ``__metadata__`` strings, else None."""
    text = (metadata or {}).get(METADATA_KEY)
    return text if isinstance(text, str) else None


def torch_marker(file: Path) -> str | None:
    """The metadata JSON of a ``.pt`` output, else None (also for unreadable or unsafe files).

    Only files whose pickle mentions the marker's name are loaded, so listing a
    folder of ordinary tensors reads no tensor data.
    """
    if not _mentions_marker(file):
        return None
    try:
        try:
            obj = torch.load(file, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as exc:
            if "mmap" not in str(exc):
                return None
            obj = torch.load(file, map_location="cpu", weights_only=True)  # legacy non-zip file
    except (pickle.UnpicklingError, RuntimeError, OSError, EOFError, ValueError, KeyError, zipfile.BadZipFile):
        return None
    return mapping_marker(obj)


def file_marker(file: Path) -> str | None:
    """The metadata JSON when ``file`` (``.safetensors``, ``.pt``, ``.pth``) is a mono-quant output, else None."""
    suffix = file.suffix.lower()
    if suffix == ".safetensors":
        return safetensors_marker(file)
    if suffix in (".pt", ".pth"):
        return torch_marker(file)
    return None


def _mentions_marker(file: Path) -> bool:
    try:
        if zipfile.is_zipfile(file):
            with zipfile.ZipFile(file) as archive:
                pickles = [n for n in archive.namelist() if n == "data.pkl" or n.endswith("/data.pkl")]
                return any(_MARKER in archive.read(n) for n in pickles)
        with open(file, "rb") as f:
            return _MARKER in f.read(PEEK_BYTES)
    except (OSError, zipfile.BadZipFile, ValueError, EOFError):
        return False


def describe(text: str) -> str:
    """``"int8, weight-only"`` or ``"fp16 cast"`` from the metadata JSON; what can be read of it."""
    try:
        meta = json.loads(text)
    except ValueError:
        return "its metadata is unreadable"
    config = meta.get("config") if isinstance(meta, dict) else None
    if not isinstance(config, dict):
        return "its metadata names no configuration"
    try:
        parsed = QuantConfig.from_dict(config)
    except (ConfigError, TypeError):
        return ", ".join(str(config[k]) for k in ("dtype", "mode") if k in config) or "unknown configuration"
    return f"{parsed.dtype} cast" if parsed.is_cast else f"{parsed.dtype}, {parsed.mode}"


def refusal(file: Path, file_format: str, text: str) -> QuantizedCheckpointError:
    """The error for a mono-quant output given where a float checkpoint is expected."""
    return QuantizedCheckpointError(
        f"{file.name}: a mono-quant output ({describe(text)}), not a float checkpoint (its tensors are "
        "quantized codes and scales). Open it as a quantized model instead: "
        f"load_quantized({file.name!r}, model=...) in Python, `mono-quant inspect {file.name}` "
        "on the command line, or File → Open Quantized in the app",
        path=str(file),
        file_format=file_format,
        what=f"a mono-quant output ({describe(text)})",
    )
