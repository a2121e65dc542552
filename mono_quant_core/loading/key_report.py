"""What loading a checkpoint into a model did: the ``KeyReport``."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

SHOWN = 10  # names listed per kind in messages; the rest are counted


@dataclass
class KeyReport:
    """Keys loaded, missing, unexpected and shape-mismatched, and how names were adapted.

    ``missing`` and ``mismatched`` use the model's names; ``unexpected`` the
    checkpoint's.  ``mismatched`` holds ``(name, model shape, checkpoint shape)``.
    ``wrapper`` is the checkpoint entry used (``"model_state"``, ``"checkpoint/ema"``;
    None: the whole file); ``ignored_entries`` what the file holds beside it
    (optimizer state, counters) and its non-tensor values.
    """

    checkpoint: str | None = None
    loaded: int = 0
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    mismatched: list[tuple[str, tuple[int, ...], tuple[int, ...]]] = field(default_factory=list)
    wrapper: str | None = None
    prefix_stripped: str | None = None
    prefix_added: str | None = None
    ignored_buffers: list[str] = field(default_factory=list)
    tied: list[str] = field(default_factory=list)
    dtype_changes: list[tuple[str, str, str]] = field(default_factory=list)
    ignored_entries: list[str] = field(default_factory=list)
    #: The tensors were matched, not read: the model was built without its weights (open_model lazy).
    deferred: bool = False

    @property
    def ok(self) -> bool:
        """True when every model key was loaded and every checkpoint tensor was used."""
        return not (self.missing or self.unexpected or self.mismatched)

    def problems(self) -> str:
        """The missing, unexpected and mismatched keys as one line each (empty when ok)."""
        lines = []
        if self.missing:
            lines.append(f"{_count(self.missing, 'missing key')}: {_names(self.missing)}")
        if self.unexpected:
            lines.append(f"{_count(self.unexpected, 'unexpected key')}: {_names(self.unexpected)}")
        if self.mismatched:
            shown = [f"{n} (model {list(m)}, checkpoint {list(c)})" for n, m, c in self.mismatched[:SHOWN]]
            more = f", … and {len(self.mismatched) - SHOWN} more" if len(self.mismatched) > SHOWN else ""
            lines.append(f"{_count(self.mismatched, 'shape mismatch', 'es')}: {', '.join(shown)}{more}")
        return "\n".join(lines)

    def summary(self) -> str:
        """A few lines for people: what was loaded, adapted, ignored and left out."""
        if self.checkpoint is None:
            return "no checkpoint: the weights are those the script set"
        if self.deferred:
            lines = [f"{self.checkpoint}: {self.loaded} tensors matched, read from the file as they are needed"]
        else:
            lines = [f"{self.checkpoint}: loaded {self.loaded} tensors"]
        if self.wrapper:
            lines.append(f"using checkpoint entry {self.wrapper!r}")
        if self.prefix_stripped:
            lines.append(f"stripped the prefix {self.prefix_stripped!r} from checkpoint names")
        if self.prefix_added:
            lines.append(f"added the prefix {self.prefix_added!r} to checkpoint names")
        if self.tied:
            lines.append(f"{_count(self.tied, 'tied weight')} shared with loaded ones: {_names(self.tied)}")
        if self.ignored_buffers:
            lines.append(
                f"ignored {_count(self.ignored_buffers, 'buffer')} the model computes itself "
                f"(not in its state dict): {_names(self.ignored_buffers)}"
            )
        if self.dtype_changes:
            first = self.dtype_changes[0]
            lines.append(
                f"converted {_count(self.dtype_changes, 'tensor')} to the model's dtype "
                f"(e.g. {first[0]}: {first[1]} -> {first[2]})"
            )
        if self.ignored_entries:
            lines.append(f"ignored: {_names(self.ignored_entries)}")
        if self.problems():
            lines.append(self.problems())
        return "\n".join(lines)

    def to_dict(self) -> dict:
        """Plain JSON-able dict (shapes as lists)."""
        data = asdict(self)
        data["mismatched"] = [[n, list(m), list(c)] for n, m, c in self.mismatched]
        data["dtype_changes"] = [list(d) for d in self.dtype_changes]
        data["ok"] = self.ok
        return data


def _count(items: list, noun: str, plural: str = "s", cut: int = 0) -> str:
    n = len(items)
    return f"{n} {noun}" if n == 1 else f"{n} {noun[: len(noun) - cut]}{plural}"


def _names(names: list[str]) -> str:
    shown = ", ".join(names[:SHOWN])
    return shown + (f", … and {len(names) - SHOWN} more" if len(names) > SHOWN else "")
