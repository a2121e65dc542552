"""Which calibration files cannot be used, found before a run.

A file cannot be used when it cannot be read (or holds no tensors, or NaN/Inf),
when its tensors are laid out unlike the other files' (another call structure,
dtype or number of dimensions), or when the model rejects it in a dry run.
One file of each distinct set of input shapes (at most ``DRY_RUN_MAX_SHAPES``)
is dry-run; files of the same shapes share its verdict.  The preview and
``load_calibration`` both ask this module, so they name the same files.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from ..errors import MonoQuantError
from .calibration_files import Batch, read_batch
from .dry_run import run_batch

#: Distinct input shapes dry-run through the model (one file each); files of other shapes are not dry-run.
DRY_RUN_MAX_SHAPES = 8

#: How a batch is passed and what it holds: ("positional" | "keywords", ((key, dtype, dims), ...)).
Structure = tuple[str, tuple[tuple[str, str, int], ...]]
Shapes = tuple[tuple[int, ...], ...]


def structure_of(batch: Batch) -> Structure:
    """The call structure of a batch; a lone tensor and a 1-tuple are the same call."""
    if isinstance(batch, dict):
        return "keywords", tuple(sorted((k, _dtype(t), t.dim()) for k, t in batch.items()))
    tensors = batch if isinstance(batch, tuple) else (batch,)
    return "positional", tuple((str(i), _dtype(t), t.dim()) for i, t in enumerate(tensors))


def shapes_of(batch: Batch) -> Shapes:
    """The tensors' shapes in the order of :func:`structure_of`."""
    if isinstance(batch, dict):
        return tuple(tuple(batch[k].shape) for k in sorted(batch))
    tensors = batch if isinstance(batch, tuple) else (batch,)
    return tuple(tuple(t.shape) for t in tensors)


def describe(structure: Structure) -> str:
    """``float32 2-d``, ``(float32 2-d, int64 1-d)`` or ``ids int64 2-d, x float32 2-d``."""
    kind, items = structure
    if kind == "keywords":
        return ", ".join(f"{k} {d} {n}-d" for k, d, n in items)
    parts = [f"{d} {n}-d" for _, d, n in items]
    return parts[0] if len(parts) == 1 else f"({', '.join(parts)})"


def reason_of(name: str, message: str) -> str:
    """A file's problem without the file name it starts with."""
    for prefix in (f"{name}: ", f"{name} "):
        if message.startswith(prefix):
            return message[len(prefix) :]
    return message


@dataclass
class DryRun:
    """The dry run of the first usable file: its output, or the problem (naming the file)."""

    path: Path
    output: Any = None
    problem: str | None = None


class FolderCheck:
    """Collects what each file holds (one file at a time), then finds the files that cannot be used."""

    def __init__(self) -> None:
        self.problems: dict[Path, str] = {}  # file -> its problem, the message naming the file
        self._order: list[Path] = []
        self._kinds: dict[Path, tuple[Structure, Shapes]] = {}

    def add(self, path: Path, batch: Batch | None, problem: str | None) -> None:
        """Record a file read by the caller: its batch, or the problem that stopped it."""
        self._order.append(path)
        if problem is not None or batch is None:
            self.problems[path] = problem or f"{path.name}: cannot be read"
        else:
            self._kinds[path] = (structure_of(batch), shapes_of(batch))

    def read(self, path: Path) -> None:
        """Read a file (with the NaN/Inf check) and record it."""
        try:
            batch = read_batch(path)
        except MonoQuantError as exc:
            self.add(path, None, str(exc))
        else:
            self.add(path, batch, None)

    def finish(self, model: nn.Module | None, read: Callable[[Path], Batch] = read_batch) -> DryRun | None:
        """Flag structure mismatches and, with ``model``, dry-run each distinct set of shapes.

        Returns the dry run of the first usable file (None without a model or usable file).
        """
        common = self._common_structure()
        if common is None:
            return None
        total = len(self._kinds)
        count = sum(1 for s, _ in self._kinds.values() if s == common)
        for path, (structure, _) in self._kinds.items():
            if structure != common:
                self.problems[path] = (
                    f"{path.name}: does not match the other files: it holds {describe(structure)}; "
                    f"{count} of {total} files hold {describe(common)}"
                )
        if model is None:
            return None
        groups: dict[Shapes, list[Path]] = {}
        for path, (structure, shapes) in self._kinds.items():
            if structure == common:
                groups.setdefault(shapes, []).append(path)
        first: DryRun | None = None
        for members in list(groups.values())[:DRY_RUN_MAX_SHAPES]:
            run = _dry_run(model, members[0], read)
            if first is None:
                first = run
            if run.problem is not None:
                self._reject(members, run.problem)
        return first

    def unusable(self) -> list[tuple[Path, str]]:
        """``(file, problem)`` in file order; the problem names the file."""
        return [(p, self.problems[p]) for p in self._order if p in self.problems]

    def _common_structure(self) -> Structure | None:
        """The structure most files share (the first file's among equals)."""
        if not self._kinds:
            return None
        counts = Counter(s for s, _ in self._kinds.values())
        best = max(counts.values())
        return next(s for s, _ in self._kinds.values() if counts[s] == best)

    def _reject(self, members: Sequence[Path], problem: str) -> None:
        tested = members[0]
        self.problems[tested] = problem
        reason = reason_of(tested.name, problem)
        for path in members[1:]:
            self.problems[path] = f"{path.name}: {reason} (dry run of {tested.name}, which has the same shapes)"


def _dry_run(model: nn.Module, path: Path, read: Callable[[Path], Batch]) -> DryRun:
    try:
        return DryRun(path, output=run_batch(model, read(path), path))
    except MonoQuantError as exc:
        return DryRun(path, problem=str(exc))
    except Exception as exc:  # a user model may raise anything; the file is named with it
        return DryRun(path, problem=f"{path.name}: the model raised {type(exc).__name__}: {exc}")


def _dtype(t: Any) -> str:
    return str(t.dtype).removeprefix("torch.")
