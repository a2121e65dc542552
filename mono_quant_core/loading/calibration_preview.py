"""``preview_calibration``: what a calibration folder holds, before a run.

Every chosen file is read (at most ``PREVIEW_MAX_FILES``; ``capped`` says when
more were left unread) and summarised per tensor; mono-quant outputs in the
folder are listed apart (``skipped``), never read as samples.  A file that
cannot be used (see ``calibration_check``: the same rule ``load_calibration``
applies) carries its reason in ``error``; ``usable`` and ``unusable`` count
them.  Problems are recorded, not raised, so that a GUI can show them all;
only a missing or empty folder raises.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import MonoQuantError
from .calibration_check import FolderCheck, reason_of
from .calibration_files import Batch, batch_items, check_finite, file_size, read_unchecked
from .calibration_set import choose_calibration
from .dry_run import describe_output
from .output_files import SKIP_REASON

PREVIEW_MAX_FILES = 1000


@dataclass
class TensorSummary:
    """One tensor of a file: shape, dtype, range over finite values, NaN/Inf counts."""

    key: str  # "" for a lone tensor, "0", "1" … in a tuple, the name in a dict
    shape: list[int]
    dtype: str
    min: float | None
    max: float | None
    mean: float | None
    nan: int
    inf: int


@dataclass
class FilePreview:
    """One file: its tensors and, when it cannot be used, why (``error``, naming the file)."""

    name: str
    bytes: int
    passed_as: str | None  # "positional" (tensor, tuple) or "keywords" (dict)
    tensors: list[TensorSummary] = field(default_factory=list)
    error: str | None = None
    skipped: str | None = None  # why the file is not a sample: "a mono-quant output"


@dataclass
class CalibrationPreview:
    """Summary of a calibration folder and, with a model, of a dry run of its first sample."""

    folder: str
    file_count: int
    selected: int
    files: list[FilePreview]
    capped: bool
    files_sha256: str
    dry_run_structure: str | None = None
    dry_run_outputs: list[tuple[str, list[int] | None, str]] = field(default_factory=list)
    dry_run_error: str | None = None
    dry_run_file: str | None = None  # the file whose dry run dry_run_structure describes
    skipped: list[FilePreview] = field(default_factory=list)  # mono-quant outputs: never samples

    @property
    def errors(self) -> list[str]:
        """Every problem found, once each: per file, then the dry run's."""
        found = [f.error for f in self.files if f.error]
        if self.dry_run_error and self.dry_run_error not in found:
            found.append(self.dry_run_error)
        return found

    @property
    def ok(self) -> bool:
        """True when every file and the dry run are usable."""
        return not self.errors

    @property
    def usable(self) -> int:
        """How many of the previewed files can be used."""
        return sum(1 for f in self.files if not f.error)

    @property
    def unusable(self) -> list[tuple[str, str]]:
        """``(file, reason)`` of each previewed file that cannot be used, the reason without the name."""
        return [(f.name, reason_of(f.name, f.error)) for f in self.files if f.error]

    def usability(self) -> str:
        """One line that counts what a run would use: ``3 of 4 files usable · 1 cannot be used``."""
        parts = [f"{self.usable} of {len(self.files)} files usable"]
        if self.unusable:
            parts.append(f"{len(self.unusable)} cannot be used")
        if self.capped:
            parts.append(f"{self.selected - len(self.files)} more not read")
        if self.selected < self.file_count:
            parts.append(f"{self.selected} of {self.file_count} files chosen")
        if self.skipped:
            n = len(self.skipped)
            parts.append(f"{n} skipped ({SKIP_REASON if n == 1 else 'mono-quant outputs'})")
        return " · ".join(parts)

    def to_rows(self) -> list[dict[str, Any]]:
        """One plain dict per tensor (or per unreadable or skipped file) for a table view; skipped files last."""
        rows = []
        for f in [*self.files, *self.skipped]:
            reason = reason_of(f.name, f.error) if f.error else None
            base = {
                "file": f.name,
                "bytes": f.bytes,
                "passed_as": f.passed_as,
                "error": f.error,
                "unusable": reason,
                "skipped": f.skipped,
            }
            tensors: list[TensorSummary | None] = list(f.tensors) or [None]
            for t in tensors:
                row = dict(base, key=None, shape=None, dtype=None, min=None, max=None, mean=None, nan=None, inf=None)
                if t is not None:
                    row.update(asdict(t))
                rows.append(row)
        return rows

    def summary(self) -> str:
        """A few lines for people."""
        lines = [
            f"{self.folder}: {self.selected} of {self.file_count} files chosen"
            + (f", first {len(self.files)} previewed" if self.capped else ""),
            self.usability(),
        ]
        if self.files and self.files[0].tensors:
            first = self.files[0]
            shapes = ", ".join(f"{t.key + ' ' if t.key else ''}{t.shape} {t.dtype}" for t in first.tensors)
            lines.append(f"first file {first.name}: {shapes} (passed as {first.passed_as})")
        if self.dry_run_structure:
            outs = ", ".join(f"{k or 'output'} {s}" for k, s, _ in self.dry_run_outputs[:8])
            lines.append(f"dry run: {self.dry_run_structure}: {outs}")
        lines += [f"{f.name}: skipped: {f.skipped}" for f in self.skipped]
        lines += self.errors
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict."""
        data = asdict(self)
        data["dry_run_outputs"] = [list(o) for o in self.dry_run_outputs]
        data["errors"] = self.errors
        data["usable"] = self.usable
        data["unusable"] = [list(u) for u in self.unusable]
        return data


def preview_calibration(
    folder: str | os.PathLike,
    model: nn.Module | None = None,
    samples: int | None = None,
    seed: int | None = None,
    max_files: int = PREVIEW_MAX_FILES,
) -> CalibrationPreview:
    """Summarise the chosen files, find those that cannot be used and, with ``model``, dry-run them."""
    chosen = choose_calibration(folder, samples, seed)
    check = FolderCheck()
    files = []
    for path in chosen.files[:max_files]:
        preview, batch = _preview_file(path)
        files.append(preview)
        check.add(path, batch, preview.error)
    dry_run = check.finish(model)
    for preview, path in zip(files, chosen.files, strict=False):
        if preview.error is None and path in check.problems:
            preview.error = check.problems[path]
    result = CalibrationPreview(
        folder=str(chosen.folder),
        file_count=chosen.folder_count,
        selected=len(chosen),
        files=files,
        capped=len(chosen) > len(files),
        files_sha256=chosen.file_list_sha256(),
        skipped=[FilePreview(p.name, file_size(p), None, skipped=SKIP_REASON) for p in chosen.skipped],
    )
    if model is not None:
        if dry_run is None:
            result.dry_run_error = "no dry run: no file can be used (see above)"
        elif dry_run.problem is not None:
            result.dry_run_error = dry_run.problem
        else:
            result.dry_run_file = dry_run.path.name
            result.dry_run_structure, result.dry_run_outputs = describe_output(dry_run.output)
    return result


def _preview_file(path: Path) -> tuple[FilePreview, Batch | None]:
    preview = FilePreview(name=path.name, bytes=file_size(path), passed_as=None)
    try:
        batch = read_unchecked(path)
    except MonoQuantError as exc:
        preview.error = str(exc)
        return preview, None
    preview.passed_as = "keywords" if isinstance(batch, dict) else "positional"
    preview.tensors = [_summarise(key, t) for key, t in batch_items(batch)]
    try:
        check_finite(batch, path)
    except MonoQuantError as exc:
        preview.error = str(exc)
        return preview, None
    return preview, batch


def _summarise(key: str, t: torch.Tensor) -> TensorSummary:
    dtype = str(t.dtype).removeprefix("torch.")
    nan = inf = 0
    lo = hi = mean = None
    if t.is_floating_point():
        nan = int(torch.isnan(t).sum())
        inf = int(torch.isinf(t).sum())
        values = t[torch.isfinite(t)] if nan or inf else t
    elif t.is_complex():
        values = None
    else:
        values = t
    if values is not None and values.numel():
        values = values.double()
        lo, hi, mean = float(values.min()), float(values.max()), float(values.mean())
    return TensorSummary(key, list(t.shape), dtype, lo, hi, mean, nan, inf)
