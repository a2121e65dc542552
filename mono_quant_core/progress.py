"""Progress callbacks, run phases and cooperative cancellation, free of Qt and of torch.

Long work in the engine takes ``progress(done, total, message)`` and a cancel
token, and checks the token between units of work (one calibration sample, one
layer).  A run also reports its phases: first a :class:`RunPlan` (the units of
each phase and what one unit is expected to cost), then a :class:`PhaseEvent`
per unit.  Callbacks run on the thread doing the work; a GUI must hop threads
itself (the Qt side uses queued signals).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from .errors import Cancelled

ProgressFn = Callable[[int, int, str], None]


@dataclass(frozen=True)
class PhaseEvent:
    """``done`` of ``total`` units of ``phase`` are finished (``done == 0``: the phase starts).

    ``phase`` is ``calibrate``, ``quantize`` or ``validate``, in that order; a phase the
    run does not need (calibration outside static mode) is not in its plan."""

    phase: str
    done: int
    total: int
    message: str = ""


@dataclass(frozen=True)
class PhasePlan:
    """One phase of a run: ``units`` steps, each expected to take ``unit_seconds`` (0: unknown)."""

    phase: str
    units: int
    unit_seconds: float = 0.0


@dataclass(frozen=True)
class RunPlan:
    """What a run will do, announced before its first unit: the phases in order."""

    phases: tuple[PhasePlan, ...]

    def units(self, phase: str) -> int:
        return next((p.units for p in self.phases if p.phase == phase), 0)

    @property
    def total_units(self) -> int:
        return sum(p.units for p in self.phases)


#: ``on_phase`` receives the RunPlan once, then PhaseEvents.
PhaseFn = Callable[["RunPlan | PhaseEvent"], None]


def span(progress: ProgressFn, start: int, length: int, total: int) -> ProgressFn:
    """A ``progress`` for a sub-task whose whole is the parent's units ``start .. start + length``.

    The sub-task counts its own ``(done, total)``; this maps them into the
    parent's range of ``total`` (never past the span's end, never backwards
    when the sub-task does not know its total yet).
    """

    def child(done: int, sub_total: int, message: str) -> None:
        if sub_total > 0:
            mapped = start + min(length, round(length * min(done, sub_total) / sub_total))
        else:
            mapped = start + min(length, done)
        progress(mapped, total, message)

    return child


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
    """Counts units of work over the phases of a :class:`RunPlan` and reports both views:
    ``progress(done, total, message)`` over the whole run, and ``on_phase`` events.

    ``total`` is fixed up front so a progress bar never jumps backwards.
    """

    def __init__(
        self,
        plan: RunPlan,
        progress: ProgressFn | None,
        cancel: CancelLike | None,
        on_phase: PhaseFn | None = None,
    ) -> None:
        self.plan = plan
        self.total = plan.total_units
        self.done = 0
        self._progress = progress or _ignore
        self._cancel = cancel
        self._on_phase = on_phase
        self._phase = ""
        self._phase_start = 0
        if on_phase is not None:
            on_phase(plan)

    @property
    def cancel_token(self) -> CancelLike | None:
        return self._cancel

    def check(self) -> None:
        check_cancel(self._cancel)

    def begin(self, phase: str, message: str = "") -> None:
        """Start ``phase``: later steps count its units."""
        self._phase, self._phase_start = phase, self.done
        if self._on_phase is not None:
            self._on_phase(PhaseEvent(phase, 0, self.plan.units(phase), message))

    def step(self, message: str, n: int = 1) -> None:
        self._advance(self.done + n, message)

    def span(self) -> ProgressFn:
        """A ``progress`` for a sub-task that does the current phase's units (``done`` of its own total)."""
        units = self.plan.units(self._phase)

        def forward(done: int, total: int, message: str) -> None:
            self._advance(self._phase_start + done, message)

        return span(forward, 0, units, units)

    def _advance(self, done: int, message: str) -> None:
        self.done = min(max(done, self.done), self.total)
        self._progress(self.done, self.total, message)
        if self._on_phase is not None and self._phase:
            units = self.plan.units(self._phase)
            self._on_phase(PhaseEvent(self._phase, min(self.done - self._phase_start, units), units, message))


class RemainingTime:
    """Seconds left in a run, from its :class:`RunPlan` and the phase events so far.

    Each phase's units are weighed by their measured cost: a phase under way
    by its own rate so far, leaving out its first unit (which carries the
    phase's one-off work: reading the first file, packing kernels,
    validation's file round trip), so by the plan until a second unit is done;
    a phase not started yet by
    the plan's expected unit time, scaled by how the run's measured phases
    compared with their expectations (a machine twice as slow is twice as
    slow everywhere).  ``clock`` is injectable for tests.
    """

    def __init__(self, plan: RunPlan, clock: Callable[[], float] = time.perf_counter) -> None:
        self.plan = plan
        self._clock = clock
        self._started: dict[str, float] = {}
        self._done: dict[str, int] = {}
        self._elapsed: dict[str, float] = {}
        self._first: dict[str, float] = {}  # seconds of each phase's first unit
        self._current = ""

    def update(self, event: PhaseEvent) -> float | None:
        """Record ``event``; seconds left, or None while nothing has been measured yet."""
        now = self._clock()
        if event.phase != self._current:
            if self._current:  # the previous phase is over: its time is fixed
                self._elapsed[self._current] = now - self._started[self._current]
                self._done[self._current] = self.plan.units(self._current)
            self._current = event.phase
            self._started[event.phase] = now
        self._done[event.phase] = event.done
        self._elapsed[event.phase] = now - self._started[event.phase]
        if event.done >= 1 and event.phase not in self._first:
            self._first[event.phase] = self._elapsed[event.phase]
        return self.remaining()

    def _rate(self, phase: str, done: int) -> float:
        """Seconds per unit of a phase under way (its first unit left out once there are two)."""
        elapsed, first = self._elapsed[phase], self._first.get(phase)
        if done >= 2 and first is not None:
            return (elapsed - first) / (done - 1)
        return elapsed / done

    def remaining(self) -> float | None:
        measured = [
            (p, self._done.get(p.phase, 0), self._elapsed[p.phase])
            for p in self.plan.phases
            if self._done.get(p.phase, 0) > 0 and p.phase in self._elapsed
        ]
        if not measured:
            return None
        expected = sum(p.unit_seconds * done for p, done, _ in measured)
        actual = sum(seconds for _, _, seconds in measured)
        speed = actual / expected if expected > 0 else 1.0  # >1: slower than expected
        left = 0.0
        for p in self.plan.phases:
            done = self._done.get(p.phase, 0)
            todo = max(p.units - done, 0)
            if not todo:
                continue
            if done >= 2 and p.phase in self._elapsed:
                left += todo * self._rate(p.phase, done)
            elif done == 1 and p.unit_seconds > 0:
                # One unit says little (it carried the one-off work): the plan's time, or that unit's
                # when it took longer (the plan knows the float model, not the quantized kernels).
                left += todo * max(p.unit_seconds * speed, self._rate(p.phase, done))
            elif done > 0 and p.phase in self._elapsed:
                left += todo * self._rate(p.phase, done)
            elif p.unit_seconds > 0:
                left += todo * p.unit_seconds * speed
            else:  # no expectation: as long per unit as the run so far
                units_done = sum(d for _, d, _ in measured)
                left += todo * actual / units_done
        return left
