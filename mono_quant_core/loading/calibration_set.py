"""``load_calibration``: a lazy sequence of batches read from a folder."""

from __future__ import annotations

import hashlib
import os
import random
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from torch import nn

from ..errors import ConfigError
from .calibration_files import Batch, file_size, list_calibration_files, read_batch
from .dry_run import run_batch


class CalibrationSet(Sequence):
    """The chosen files of a calibration folder; each is read (and checked) only when accessed.

    ``folder_count`` counts the folder's usable files; ``skipped`` holds the
    mono-quant outputs found there, which are never samples.
    """

    def __init__(
        self,
        folder: Path,
        files: Sequence[Path],
        folder_count: int | None = None,
        skipped: Sequence[Path] = (),
    ) -> None:
        self.folder = folder
        self.files: tuple[Path, ...] = tuple(files)
        self.folder_count = len(self.files) if folder_count is None else folder_count
        self.skipped: tuple[Path, ...] = tuple(skipped)
        self._sizes = [file_size(p) for p in self.files]

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int | slice) -> Any:
        if isinstance(index, slice):
            return CalibrationSet(self.folder, self.files[index], self.folder_count, self.skipped)
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


def load_calibration(folder: str | os.PathLike, samples: int | None = None, seed: int | None = None) -> CalibrationSet:
    """The calibration folder's files in natural order: all, the first ``samples``, or a seeded subset.

    Mono-quant outputs in the folder are skipped (``.skipped``) before choosing.
    """
    root = Path(folder).expanduser().resolve()
    files, outputs = list_calibration_files(root)
    return CalibrationSet(root, choose_files(files, samples, seed), len(files), outputs)


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
