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
    """One phase of a run: ``units`` steps, each expected to take ``unit_seconds`` (0: unknown).

    ``warmup``: the phase's leading units that carry its one-off work (the first file read,
    kernel packing, validation's round trip through the file format); they are left out of
    the phase's measured rate.  ``per_forward``: ``unit_seconds`` comes from a forward pass
    timed on this machine at the start of the run, so how the measured units of such phases
    compare with it says how far off the plan's forward counts are (the quantize phase's
    expectation is a per-element constant and says nothing of the forwards)."""

    phase: str
    units: int
    unit_seconds: float = 0.0
    warmup: int = 1
    per_forward: bool = True


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

    Each phase's units are weighed by their measured cost.  A phase under way is timed by its
    own recent rate (its latest half of units) once a unit after its ``warmup`` units is done
    (the warm-up units carry the phase's one-off work: reading the first file, packing
    kernels, validation's file round trip); until then its remaining units take the plan's
    time.  The plan's times are scaled by how the run's measured forward-pass phases
    compared with their expectations (a forward that costs a quarter more than planned does
    so in every phase); the quantize phase, planned from a per-element constant, sets no
    scale for the others.  ``clock`` is injectable for tests.
    """

    def __init__(self, plan: RunPlan, clock: Callable[[], float] = time.perf_counter) -> None:
        self.plan = plan
        self._clock = clock
        self._started: dict[str, float] = {}
        self._done: dict[str, int] = {}
        self._elapsed: dict[str, float] = {}
        self._warm: dict[str, float] = {}  # seconds of each phase's warm-up units
        self._marks: dict[str, list[tuple[int, float]]] = {}  # (units done, seconds) after the warm-up
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
        warmup = self._warmup(event.phase)
        if event.done >= warmup and event.phase not in self._warm:
            self._warm[event.phase] = self._elapsed[event.phase]
        if event.done >= warmup:
            marks = self._marks.setdefault(event.phase, [])
            if not marks or event.done > marks[-1][0]:
                marks.append((event.done, self._elapsed[event.phase]))
        return self.remaining()

    def _recent_rate(self, phase: str, done: int) -> float | None:
        """Seconds per unit over the latest half of the phase's steady units (at least one), or None.

        Units of one phase differ (the embeddings before the transformer blocks, small layers
        before large ones): the recent ones say more of those to come than the phase's start."""
        warmup = self._warmup(phase)
        marks = self._marks.get(phase, [])
        if done <= warmup or not marks:
            return None
        since = done - max(1, (done - warmup + 1) // 2)
        start = next(((d, t) for d, t in reversed(marks) if d <= since), marks[0])
        if start[0] >= done:
            return None
        return (self._elapsed[phase] - start[1]) / (done - start[0])

    def _warmup(self, phase: str) -> int:
        p = next((p for p in self.plan.phases if p.phase == phase), None)
        return 0 if p is None else max(0, min(p.warmup, p.units - 1))

    def _steady(self, phase: str, done: int) -> tuple[int, float]:
        """Units done after the phase's warm-up, and their seconds."""
        warmup = self._warmup(phase)
        if done > warmup and phase in self._warm:
            return done - warmup, self._elapsed[phase] - self._warm[phase]
        return 0, 0.0

    def _speed(self, measured: list[tuple[PhasePlan, int, float]]) -> float:
        """Measured / planned time of the forward-pass phases (>1: slower than planned); 1 when unknown.

        Steady units decide where there are any (warm-up units carry one-off work); before, a
        phase whose warm-up is its first unit alone (a calibration sample and the first file read)."""
        timed = [(p, d, s) for p, d, s in measured if p.per_forward and p.unit_seconds > 0]
        steady = [(p, *self._steady(p.phase, d)) for p, d, _ in timed]
        steady = [(p, d, s) for p, d, s in steady if d > 0]
        basis = steady or [(p, d, s) for p, d, s in timed if p.warmup <= 1]
        expected = sum(p.unit_seconds * d for p, d, _ in basis)
        return sum(s for _, _, s in basis) / expected if expected > 0 else 1.0

    def remaining(self) -> float | None:
        measured = [
            (p, self._done.get(p.phase, 0), self._elapsed[p.phase])
            for p in self.plan.phases
            if self._done.get(p.phase, 0) > 0 and p.phase in self._elapsed
        ]
        if not measured:
            return None
        speed = self._speed(measured)
        left = 0.0
        for p in self.plan.phases:
            done = self._done.get(p.phase, 0)
            todo = max(p.units - done, 0)
            if not todo:
                continue
            rate = self._recent_rate(p.phase, done) if p.phase in self._elapsed else None
            if rate is not None:
                left += todo * rate
            elif p.unit_seconds > 0:
                left += todo * p.unit_seconds * speed
            elif done > 0:  # no expectation: as long per unit as this phase so far
                left += todo * self._elapsed[p.phase] / done
            else:  # no expectation, not started: as long per unit as the run so far
                units_done = sum(d for _, d, _ in measured)
                left += todo * sum(s for _, _, s in measured) / units_done
        return left
