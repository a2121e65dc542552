"""What an opened checkpoint offers: names, shapes and dtypes first, then data in chunks."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch

CHUNK_BYTES = 64 << 20  # memory held at once beyond the model while loading

Chunk = dict[str, torch.Tensor]


@dataclass
class TensorInfo:
    """A checkpoint tensor's shape, dtype and size, known before its data is read."""

    shape: tuple[int, ...]
    dtype: str  # torch's name without "torch.", e.g. "float32"
    nbytes: int


@dataclass
class CheckpointEntry:
    """One mapping of tensors inside a checkpoint: a candidate for the model's state dict.

    ``path`` is where it lies (``()`` for the whole file, ``("model_state",)``,
    ``("checkpoint", "ema")``); ``infos`` uses names relative to it, nested
    dicts joined with dots; ``inside`` names its non-tensor values and
    ``levels`` the keys of each container on the way to it (``(container path,
    its keys)``), from which ``ignored`` is worked out only when asked.
    """

    path: tuple[str, ...]
    infos: dict[str, TensorInfo]
    inside: list[str] = field(default_factory=list)
    levels: list[tuple[tuple[str, ...], tuple[str, ...]]] = field(default_factory=list)

    @property
    def label(self) -> str | None:
        """``"model_state"``, ``"checkpoint/ema"``, or None for the whole file."""
        return "/".join(self.path) or None

    @property
    def ignored(self) -> list[str]:
        """What the file holds beside this entry (``"optimizer_state"``, ``"checkpoint/optimizer"``)
        and the non-tensor values inside it, sorted."""
        beside = [
            "/".join((*where, key)) for where, keys in self.levels for key in keys if key != self.path[len(where)]
        ]
        return sorted(beside + self.inside)


@dataclass
class CheckpointSource:
    """A checkpoint's candidate entries, and a reader that hands an entry's tensors out chunk by chunk.

    ``release`` runs on each chunk once the caller is done with it, so its
    memory can go before the next one is read.
    """

    path: Path
    entries: list[CheckpointEntry]
    reader: Callable[[CheckpointEntry, list[str]], Chunk] | None
    release: Callable[[Chunk], None] | None = None
    #: Whether the reader's tensors own their memory (not views of a mapped file) and may be kept.
    owned: bool = False

    def read(self, entry: CheckpointEntry, names: list[str]) -> Iterator[Chunk]:
        """Yield the named tensors of ``entry`` in chunks of about ``CHUNK_BYTES``."""
        if self.reader is None:
            raise ValueError(f"{self.path.name}: read after close")
        for names_in_chunk in _chunks(names, entry.infos):
            chunk = self.reader(entry, names_in_chunk)
            yield chunk
            if self.release is not None:
                self.release(chunk)
            del chunk  # the next chunk is read with this one gone

    def close(self) -> None:
        """Drop every reference to the file's data."""
        self.reader = self.release = None


def _chunks(names: list[str], infos: dict[str, TensorInfo]) -> Iterator[list[str]]:
    chunk: list[str] = []
    held = 0
    for name in names:
        chunk.append(name)
        held += infos[name].nbytes
        if held >= CHUNK_BYTES:
            yield chunk
            chunk, held = [], 0
    if chunk:
        yield chunk
