"""Progress on stderr: one redrawn bar on a terminal, throttled plain lines otherwise."""

from __future__ import annotations

import shutil
import sys
import time
from collections.abc import Callable
from typing import TextIO

BAR_WIDTH = 24
#: Seconds between redraws of the terminal bar, and between plain lines of one phase.
TTY_INTERVAL = 0.1
PLAIN_INTERVAL = 2.0


class ProgressPrinter:
    """A ``ProgressFn`` that writes ``[ 42%] calibrating 5/64`` lines, or a bar on a TTY.

    Plain lines are written when the phase (the message's first word) changes,
    at most every ``PLAIN_INTERVAL`` seconds within a phase, and at 100 %.
    ``label`` prefixes every message (the job's name in ``run``).
    """

    def __init__(
        self,
        stream: TextIO | None = None,
        *,
        tty: bool | None = None,
        clock: Callable[[], float] = time.monotonic,
        width: int | None = None,
    ):
        self.stream = stream if stream is not None else sys.stderr
        self.tty = tty if tty is not None else _isatty(self.stream)
        self.label = ""
        self._clock = clock
        self._width = width
        self._last_time: float | None = None
        self._last_phase: str | None = None
        self._last_line = ""
        self._drawn = False

    def __call__(self, done: int, total: int, message: str) -> None:
        now = self._clock()
        phase = message.split(" ", 1)[0]
        finished = total > 0 and done >= total
        due = self._last_time is None or now - self._last_time >= (TTY_INTERVAL if self.tty else PLAIN_INTERVAL)
        if not (due or finished or phase != self._last_phase):
            return
        line = self._line(done, total, message)
        if line == self._last_line:
            return
        self._last_time, self._last_phase, self._last_line = now, phase, line
        if self.tty:
            width = (self._width or shutil.get_terminal_size().columns) - 1
            self.stream.write("\r" + line[:width].ljust(width))
            self._drawn = True
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def finish(self) -> None:
        """Clear the terminal bar so that what follows starts on a clean line."""
        if self.tty and self._drawn:
            width = (self._width or shutil.get_terminal_size().columns) - 1
            self.stream.write("\r" + " " * width + "\r")
            self.stream.flush()
        self._drawn = False
        self._last_time = self._last_phase = None
        self._last_line = ""

    def _line(self, done: int, total: int, message: str) -> str:
        text = f"{self.label}{message}"
        if total <= 0:
            return f"[    ] {text}" if not self.tty else f"[{'.' * BAR_WIDTH}]      {text}"
        fraction = min(max(done / total, 0.0), 1.0)
        percent = int(fraction * 100)
        if not self.tty:
            return f"[{percent:3d}%] {text}"
        filled = int(fraction * BAR_WIDTH)
        return f"[{'#' * filled}{'.' * (BAR_WIDTH - filled)}] {percent:3d}% {text}"


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False
