"""The run's phases through the public API: the plan, phase events, sub-step spans, time left."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from mono_quant_core import QuantConfig, quantize
from mono_quant_core.progress import PhaseEvent, PhasePlan, RemainingTime, RunPlan, span


def mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 8)).eval()


def samples(n: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return [torch.randn(4, 32, generator=g) for _ in range(n)]


def run_events(mode: str, n: int):
    items, overall = [], []
    quantize(
        mlp(),
        QuantConfig(mode=mode),
        samples(n),
        progress=lambda d, t, m: overall.append((d, t)),
        on_phase=items.append,
    )
    return items, overall


@pytest.mark.parametrize(
    "mode,n,expect",
    [
        ("static", 10, [("calibrate", 8), ("quantize", 2), ("validate", 3)]),  # every 5th held out, + round trip
        ("dynamic", 6, [("quantize", 2), ("validate", 7)]),
        ("weight-only", 40, [("quantize", 2), ("validate", 9)]),  # at most 8 validation samples (the default)
    ],
)
def test_plan_then_events_of_each_phase_in_order(mode, n, expect):
    items, overall = run_events(mode, n)
    plan = items[0]
    assert isinstance(plan, RunPlan)
    assert [(p.phase, p.units) for p in plan.phases] == expect
    assert all(p.unit_seconds > 0 for p in plan.phases)  # one timed forward and the weights' size
    events = items[1:]
    assert all(isinstance(e, PhaseEvent) for e in events)
    # Each phase starts with done == 0, counts up by one unit at a time to its total.
    seen = []
    for phase, units in expect:
        mine = [e for e in events if e.phase == phase]
        assert [e.done for e in mine] == list(range(units + 1)), phase
        assert {e.total for e in mine} == {units}
        seen.append(events.index(mine[0]))
    assert seen == sorted(seen)
    # The overall progress counts the same units: monotonic, ending at the plan's total.
    assert [d for d, _ in overall] == sorted(d for d, _ in overall)
    assert overall[-1] == (plan.total_units, plan.total_units)


def test_no_listener_no_probe_forward():
    calls = []
    model = mlp()
    model.register_forward_hook(lambda *a: calls.append(1))
    quantize(model, QuantConfig(mode="dynamic"), samples(3))
    with_listener = []
    model2 = mlp()
    model2.register_forward_hook(lambda *a: with_listener.append(1))
    quantize(model2, QuantConfig(mode="dynamic"), samples(3), on_phase=lambda item: None)
    # The hook sits on the model, and quantize runs its clones with the same hooks: one more forward.
    assert len(with_listener) == len(calls) + 1


def test_span_maps_a_sub_task_into_its_part_of_the_whole():
    got = []
    child = span(lambda d, t, m: got.append((d, t, m)), start=10, length=20, total=50)
    child(0, 4, "a")
    child(1, 4, "b")
    child(4, 4, "c")
    child(9, 4, "over")  # never past the span's end
    child(3, 0, "unknown total")  # counted unit by unit while the sub-task's total is unknown
    assert got == [(10, 50, "a"), (15, 50, "b"), (30, 50, "c"), (30, 50, "over"), (13, 50, "unknown total")]


PLAN = RunPlan((PhasePlan("calibrate", 10, 1.0), PhasePlan("quantize", 5, 0.5), PhasePlan("validate", 5, 4.0)))


def replay(plan: RunPlan, unit_cost: dict[str, float]) -> list[tuple[float, float | None]]:
    """(actual seconds left, estimate) at every event of a run whose units cost ``unit_cost``."""
    now = [0.0]
    estimate = RemainingTime(plan, clock=lambda: now[0])
    total = sum(p.units * unit_cost[p.phase] for p in plan.phases)
    out = []
    for p in plan.phases:
        for done in range(p.units + 1):
            if done:
                now[0] += unit_cost[p.phase]
            out.append((total - now[0], estimate.update(PhaseEvent(p.phase, done, p.units))))
    return out


def test_time_left_is_exact_when_the_plan_is_right_up_to_a_machine_factor():
    # A machine 3x slower than the plan expects, uniformly: exact from the first measured unit on.
    points = replay(PLAN, {"calibrate": 3.0, "quantize": 1.5, "validate": 12.0})
    assert points[0][1] is None  # nothing measured yet
    for actual, est in points[2:]:
        assert est == pytest.approx(actual, abs=1e-9)


def test_time_left_within_30_percent_after_a_fifth_when_phases_are_off_by_a_quarter():
    # Validation 25 % dearer than planned, relative to calibration (the real spread, docs/benchmarks.md).
    cost = {"calibrate": 1.0, "quantize": 0.5, "validate": 5.0}
    points = replay(PLAN, cost)
    total = points[0][0]
    late = [(a, e) for a, e in points if a <= 0.8 * total and a > 0]
    assert late and all(0.7 <= e / a <= 1.3 for a, e in late)


def test_flat_rate_would_miss_the_same_run():
    """The old estimate (every unit the same) is far off on that run: the test above means something."""
    cost = {"calibrate": 1.0, "quantize": 0.5, "validate": 5.0}
    total_units = PLAN.total_units
    elapsed, done, worst = 0.0, 0, 1.0
    total = sum(p.units * cost[p.phase] for p in PLAN.phases)
    for p in PLAN.phases:
        for _ in range(p.units):
            elapsed += cost[p.phase]
            done += 1
            left = total - elapsed
            if elapsed >= 0.2 * total and left > 0:
                worst = min(worst, (elapsed / done * (total_units - done)) / left)
    assert worst < 0.7


def test_a_phases_first_unit_carries_its_one_off_work_and_is_left_out_of_its_rate():
    """Validation's first unit is the file round trip; kernels pack on the first forward."""
    plan = RunPlan((PhasePlan("validate", 6, 1.0),))
    now = [0.0]
    estimate = RemainingTime(plan, clock=lambda: now[0])
    estimate.update(PhaseEvent("validate", 0, 6))
    now[0] = 5.0  # the first unit: 5 s of one-off work
    estimate.update(PhaseEvent("validate", 1, 6))
    for done in range(2, 6):
        now[0] += 1.0  # then 1 s a unit
        assert estimate.update(PhaseEvent("validate", done, 6)) == pytest.approx(6 - done)


def test_the_quantize_phase_sets_no_scale_for_the_forward_passes():
    """Quantizing layers 5x faster than its per-element constant says nothing of the forwards."""
    plan = RunPlan((PhasePlan("quantize", 10, 0.5, per_forward=False), PhasePlan("validate", 5, 1.0)))
    now = [0.0]
    estimate = RemainingTime(plan, clock=lambda: now[0])
    estimate.update(PhaseEvent("quantize", 0, 10))
    for done in range(1, 6):
        now[0] += 0.1
        left = estimate.update(PhaseEvent("quantize", done, 10))
    assert left == pytest.approx(5 * 0.1 + 5 * 1.0)


def test_validation_warms_up_over_the_file_and_its_round_trip_samples():
    """Validation's units: the file format (quick), the first sample (kernels packed, layers rebuilt),
    the second (layers rebuilt), then plain samples: none of the first three sets the rate."""
    from mono_quant_core.quantizer import validate_plan
    from mono_quant_core.validation import ROUND_TRIP_SAMPLES

    plan = RunPlan((validate_plan(6, 1.0),))
    assert plan.phases[0].units == 7 and plan.phases[0].warmup == 1 + ROUND_TRIP_SAMPLES == 3
    now = [0.0]
    estimate = RemainingTime(plan, clock=lambda: now[0])
    estimate.update(PhaseEvent("validate", 0, 7))
    for done, cost in ((1, 0.1), (2, 4.0), (3, 1.5)):
        now[0] += cost
        left = estimate.update(PhaseEvent("validate", done, 7))
        assert left == pytest.approx((7 - done) * 1.0)  # the plan's time until a plain sample is measured
    for done in range(4, 7):
        now[0] += 1.2  # plain samples: 1.2 s each, measured
        assert estimate.update(PhaseEvent("validate", done, 7)) == pytest.approx((7 - done) * 1.2)


def test_a_phase_is_timed_by_its_recent_units():
    """Cheap units first (embeddings), then dear ones (blocks): the latest half of the units decides."""
    plan = RunPlan((PhasePlan("quantize", 10, 0.5, per_forward=False),))
    now = [0.0]
    estimate = RemainingTime(plan, clock=lambda: now[0])
    estimate.update(PhaseEvent("quantize", 0, 10))
    for done in range(1, 7):
        now[0] += 0.1 if done <= 3 else 1.0
        left = estimate.update(PhaseEvent("quantize", done, 10))
    assert left == pytest.approx(4 * 1.0)
