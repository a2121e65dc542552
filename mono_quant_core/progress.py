"""Progress callbacks and cooperative cancellation, free of Qt and of torch.

Long work in the engine takes ``progress(done, total, message)`` and a cancel
token, and checks the token between units of work (one calibration sample, one
layer).  Callbacks run on the thread doing the work; a GUI must hop threads
itself (the Qt side uses queued signals).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Protocol

from .errors import Cancelled

ProgressFn = Callable[[int, int, str], None]


class CancelLike(Protocol):
    def is_set(self) -> bool: ...


class CancelToken:
    """A thread-safe flag: ``cancel()`` from any thread, ``check()`` in the worker."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def cancel(self) -> None:
        self._event.set()

    def is_set(self) -> bool:
        return self._event.is_set()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()

    def check(self) -> None:
        if self._event.is_set():
            raise Cancelled("cancelled by the user")


def check_cancel(token: CancelLike | None) -> None:
    """Raise :class:`Cancelled` if ``token`` (a CancelToken or threading.Event) is set."""
    if token is not None and token.is_set():
        raise Cancelled("cancelled by the user")


def _ignore(done: int, total: int, message: str) -> None:
    pass


class Stepper:
    """Counts units of work over several phases and reports ``(done, total, message)``.

    ``total`` is fixed up front so a progress bar never jumps backwards.
    """

    def __init__(self, total: int, progress: ProgressFn | None, cancel: CancelLike | None):
        self.total = max(int(total), 0)
        self.done = 0
        self._progress = progress or _ignore
        self._cancel = cancel

    def check(self) -> None:
        check_cancel(self._cancel)

    def step(self, message: str, n: int = 1) -> None:
        self.done = min(self.done + n, self.total)
        self._progress(self.done, self.total, message)

    def announce(self, message: str) -> None:
        self._progress(self.done, self.total, message)
