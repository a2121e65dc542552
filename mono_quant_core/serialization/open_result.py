"""A quantized file opened as a run's result: the model, its report, config and source."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from torch import nn

from ..config import QuantConfig
from ..errors import QuantizedFileError
from ..report import QuantReport
from .load import load_quantized
from .read import output_bytes, read_metadata, resolve

if TYPE_CHECKING:
    from ..quantizer import QuantResult


def open_quantized(
    path: str | os.PathLike[str],
    script: str | os.PathLike[str] | None = None,
    entry: str | None = None,
    entry_kwargs: dict[str, Any] | None = None,
    model: nn.Module | None = None,
    verify: bool = True,
) -> QuantResult:
    """``path`` as a :class:`~mono_quant_core.QuantResult`, as if the run that wrote it had just ended.

    The model comes from :func:`load_quantized` (``script`` or ``model`` gives
    the float architecture); the report, config and calibration facts are the
    file's own, so the result can be shown, run, saved again (another format,
    another name) and exported.  ``source`` keeps what the file says about its
    origin (checkpoint name and SHA-256) plus ``script_path`` and
    ``quantized_path``.
    """
    from ..quantizer import QuantResult

    path = resolve(path)  # a sharded output's folder, shard or name: its index
    qmodel = load_quantized(path, script, entry=entry, entry_kwargs=entry_kwargs, model=model, verify=verify)
    meta = read_metadata(path)
    try:
        report = QuantReport.from_dict(meta["report"])
        config = QuantConfig.from_dict(meta["config"])
    except (KeyError, TypeError, ValueError) as exc:
        raise QuantizedFileError(f"{path}: its report or config cannot be read ({exc})") from exc
    report.file_bytes = output_bytes(path)
    source: dict[str, Any] = dict(meta.get("source") or {})
    if script is not None:
        source["script_path"] = os.path.abspath(os.fspath(script))
    source["quantized_path"] = os.path.abspath(path)
    return QuantResult(
        model=qmodel,
        report=report,
        config=config,
        source=source,
        calibration_info=dict(meta.get("calibration") or {}),
    )
