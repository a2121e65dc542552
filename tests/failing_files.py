"""A temporary file whose writes fail after a byte budget (a full disk, an interruption), for
the atomic-write tests of the engine and of the application."""

from __future__ import annotations

from mono_quant_core.serialization import atomic


class FailingFile:
    """A file that accepts ``budget`` bytes, then raises ``error`` (a full disk, a Ctrl-C)."""

    def __init__(self, f, budget: int, error: BaseException):
        self._f, self._budget, self._error, self.written = f, budget, error, 0

    def write(self, data) -> int:
        n = memoryview(data).nbytes
        if self.written + n > self._budget:
            self._f.write(bytes(memoryview(data).cast("B")[: self._budget - self.written]))
            self.written = self._budget
            raise self._error
        self.written += n
        return self._f.write(data)

    def __getattr__(self, name):
        return getattr(self._f, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._f.close()


def fail_writes_after(monkeypatch, budget: int, error: BaseException) -> None:
    real = atomic.open_temp
    monkeypatch.setattr(atomic, "open_temp", lambda fd: FailingFile(real(fd), budget, error))
