"""``load_calibration``: a lazy sequence of batches read from a folder."""

from __future__ import annotations

import hashlib
import os
import random
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from torch import nn

from ..errors import CalibrationError, ConfigError
from .calibration_check import FolderCheck, reason_of
from .calibration_files import Batch, file_size, list_calibration_files, read_batch
from .dry_run import run_batch

#: Unusable files named in full in an error message; the rest are counted.
LISTED_PROBLEMS = 5


class CalibrationSet(Sequence[Any]):
    """The chosen files of a calibration folder; each is read (and checked) when accessed.

    ``folder_count`` counts the folder's candidate files (mono-quant outputs
    excluded); ``skipped`` holds those outputs, which are never samples;
    ``skipped_unusable`` the ``(file, reason)`` of chosen files left out because
    they cannot be used (``load_calibration(..., skip_unusable=True)``).
    """

    def __init__(
        self,
        folder: Path,
        files: Sequence[Path],
        folder_count: int | None = None,
        skipped: Sequence[Path] = (),
        skipped_unusable: Sequence[tuple[Path, str]] = (),
    ) -> None:
        self.folder = folder
        self.files: tuple[Path, ...] = tuple(files)
        self.folder_count = len(self.files) if folder_count is None else folder_count
        self.skipped: tuple[Path, ...] = tuple(skipped)
        self.skipped_unusable: tuple[tuple[Path, str], ...] = tuple(skipped_unusable)
        self._sizes = [file_size(p) for p in self.files]

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int | slice) -> Any:
        if isinstance(index, slice):
            return CalibrationSet(
                self.folder, self.files[index], self.folder_count, self.skipped, self.skipped_unusable
            )
        return read_batch(self.files[index])

    def __iter__(self) -> Iterator[Batch]:
        for file in self.files:
            yield read_batch(file)

    def __repr__(self) -> str:
        return f"CalibrationSet({str(self.folder)!r}, {len(self)} of {self.folder_count} files)"

    def file_list_sha256(self) -> str:
        """SHA-256 of the chosen files' names and sizes, in order (stable across machines)."""
        digest = hashlib.sha256()
        for file, size in zip(self.files, self._sizes, strict=False):
            digest.update(f"{file.name}\0{size}\n".encode())
        return digest.hexdigest()

    def dry_run(self, model: nn.Module, index: int = 0) -> Any:
        """Run one sample through ``model`` under inference mode; CalibrationError names the file."""
        return run_batch(model, self[index], self.files[index])

    def skipped_records(self) -> list[dict[str, str]]:
        """The files left out as unusable, as the report records them: ``{"file", "reason"}``."""
        return [{"file": path.name, "reason": reason} for path, reason in self.skipped_unusable]

    def checked(self, model: nn.Module | None = None, skip_unusable: bool = False) -> CalibrationSet:
        """Read every chosen file once (and dry-run them through ``model``, when given) to find the unusable ones.

        Without ``skip_unusable`` any unusable file is a CalibrationError naming
        it; with it they are left out and recorded in ``skipped_unusable``.
        """
        check = FolderCheck()
        for path in self.files:
            check.read(path)
        check.finish(model)
        unusable = check.unusable()
        if not unusable:
            return self
        bad = {path for path, _ in unusable}
        kept = [p for p in self.files if p not in bad]
        if not skip_unusable or not kept:
            raise CalibrationError(_refusal(self.folder, [problem for _, problem in unusable], skip_unusable))
        reasons = [(path, reason_of(path.name, problem)) for path, problem in unusable]
        return CalibrationSet(self.folder, kept, self.folder_count, self.skipped, [*self.skipped_unusable, *reasons])


def load_calibration(
    folder: str | os.PathLike[str],
    samples: int | None = None,
    seed: int | None = None,
    *,
    skip_unusable: bool = False,
    model: nn.Module | None = None,
    check: bool = True,
) -> CalibrationSet:
    """The calibration folder's files in natural order: all, the first ``samples``, or a seeded subset.

    Mono-quant outputs in the folder are skipped (``.skipped``) before choosing.
    The chosen files are then read once to find those that cannot be used
    (unreadable, NaN/Inf, laid out unlike the others, or, with ``model``,
    rejected by a dry run): a CalibrationError names them before any work is
    done, or with ``skip_unusable=True`` they are left out and recorded
    (``.skipped_unusable``).  ``check=False`` reads nothing until a sample is accessed.
    """
    chosen = choose_calibration(folder, samples, seed)
    return chosen.checked(model, skip_unusable) if check else chosen


def choose_calibration(folder: str | os.PathLike[str], samples: int | None, seed: int | None) -> CalibrationSet:
    """The chosen files, none read yet."""
    root = Path(folder).expanduser().resolve()
    files, outputs = list_calibration_files(root)
    return CalibrationSet(root, choose_files(files, samples, seed), len(files), outputs)


def _refusal(folder: Path, problems: list[str], skipping: bool) -> str:
    listed = "; ".join(problems[:LISTED_PROBLEMS])
    if len(problems) > LISTED_PROBLEMS:
        listed += f"; … and {len(problems) - LISTED_PROBLEMS} more"
    if skipping:
        return f"{folder}: no usable calibration files: {listed}"
    n = len(problems)
    them = "it" if n == 1 else "them"
    return (
        f"{folder}: {n} calibration file{'s' if n > 1 else ''} cannot be used: {listed}; "
        f"fix or remove {them}, or leave {them} out (skip_unusable=True)"
    )


def choose_files(files: list[Path], samples: int | None, seed: int | None) -> list[Path]:
    """First ``samples`` files, or with ``seed`` a random subset kept in natural order."""
    if samples is None:
        return list(files)
    if isinstance(samples, bool) or not isinstance(samples, int) or samples < 1:
        raise ConfigError(f"samples: must be a positive whole number, got {samples!r}")
    if samples >= len(files):
        return list(files)
    if seed is None:
        return list(files[:samples])
    picked = sorted(random.Random(seed).sample(range(len(files)), samples))
    return [files[i] for i in picked]
