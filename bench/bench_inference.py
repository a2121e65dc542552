"""Inference speed and weight memory of quantized Linear stacks against float, side by side.

A stack of 4 Linear(4096, 4096) layers (256 MiB float32).  Timings interleave
the cases round by round in one process (so machine load hits all alike) and
report the median; references measured in the same run: the float model and
``torch.ao.quantization.quantize_dynamic``.  Resident weight memory is
measured per case in a fresh process: RSS after building the quantized model
and running one forward (kernels packed), with the float model freed.
Usage: ``python bench/bench_inference.py`` (about 1.5 minutes on 2 cores).
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
import warnings

LAYERS, WIDTH = 4, 4096
BATCHES = (1, 16, 64, 512)
CASES = {
    "float32": None,
    "ao quantize_dynamic": "ao",
    "int8 dynamic": dict(mode="dynamic"),
    "int8 weight-only": dict(mode="weight-only"),
    "int4 weight-only g128": dict(dtype="int4", mode="weight-only", granularity="per-group", group_size=128),
    "bf16 cast": dict(dtype="bf16"),
    "fp16 cast": dict(dtype="fp16"),
}
#: Seconds of timing per case and batch (at least 3 calls each).
BUDGET_S = 0.6


def build(case: str):
    import torch
    from torch import nn

    torch.manual_seed(0)
    model = nn.Sequential(*[nn.Linear(WIDTH, WIDTH) for _ in range(LAYERS)]).eval()
    spec = CASES[case]
    if spec is None:
        return model, model
    if spec == "ao":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return model, torch.ao.quantization.quantize_dynamic(model, {nn.Linear}, dtype=torch.qint8)
    from mono_quant_core import QuantConfig, quantize

    return model, quantize(model, QuantConfig(**spec), validate=False).model


def kernels_of(model) -> str:
    return ",".join(sorted({getattr(m, "kernel", "") for m in model.modules() if hasattr(m, "kernel")})) or "-"


def timing() -> tuple[dict, dict, dict]:
    import torch

    torch.set_num_threads(2)
    models, names, accuracy = {}, {}, {}
    reference = None
    x_acc = torch.randn(8, WIDTH, generator=torch.Generator().manual_seed(1))
    for case in CASES:
        float_model, model = build(case)
        with torch.inference_mode():
            if reference is None:
                reference = float_model(x_acc)
            y = model(x_acc)
        models[case] = model
        names[case] = kernels_of(model)
        err = (reference.double() - y.double()).square().sum()
        accuracy[case] = float("inf") if err == 0 else float(10 * torch.log10(reference.double().square().sum() / err))
    times: dict[str, dict[int, float]] = {case: {} for case in CASES}
    with torch.inference_mode():
        for batch in BATCHES:
            x = torch.randn(batch, WIDTH)
            samples: dict[str, list[float]] = {case: [] for case in CASES}
            for model in models.values():
                model(x)  # warm-up
            spent = 0.0
            while spent < BUDGET_S * len(CASES) or min(len(s) for s in samples.values()) < 3:
                for case, model in models.items():
                    t0 = time.perf_counter()
                    model(x)
                    dt = time.perf_counter() - t0
                    samples[case].append(dt)
                    spent += dt
            for case in CASES:
                times[case][batch] = statistics.median(samples[case])
    return times, names, accuracy


MEMORY_CHILD = r"""
import gc, json, sys
sys.path.insert(0, {here!r})
import torch
torch.set_num_threads(2)
from _rss import rss
import bench_inference as b
if {case!r} not in ("float32", "ao quantize_dynamic"):
    from mono_quant_core import quantize  # imports first, so they are not counted
base = rss()
float_model, model = b.build({case!r})
with torch.inference_mode():
    model(torch.randn(1, b.WIDTH))  # packs the kernels
if model is not float_model:
    del float_model
gc.collect()
import ctypes
ctypes.CDLL("libc.so.6").malloc_trim(0)  # hand freed temporaries back, so RSS counts live tensors
print(json.dumps(rss() - base))
"""


def memory(case: str) -> int:
    here = os.path.dirname(os.path.abspath(__file__))
    out = subprocess.run(
        [sys.executable, "-c", MEMORY_CHILD.format(here=here, case=case)], capture_output=True, text=True, check=True
    )
    return int(out.stdout.strip().splitlines()[-1])


def main() -> None:
    import torch

    start = time.perf_counter()
    times, names, accuracy = timing()
    resident = {case: memory(case) for case in CASES}
    float_bytes = LAYERS * (WIDTH * WIDTH + WIDTH) * 4
    print(
        f"Model: {LAYERS} x Linear({WIDTH}, {WIDTH}), {float_bytes / 2**20:.0f} MiB float32; "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads\n"
    )
    head = " | ".join(f"batch {b} (ms, x float)" for b in BATCHES)
    print(f"| case | kernel | {head} | output SQNR | resident weights |")
    print("|---|---|" + "---|" * len(BATCHES) + "---|---|")
    for case in CASES:
        cells = " | ".join(f"{times[case][b] * 1e3:.2f} ({times['float32'][b] / times[case][b]:.2f}x)" for b in BATCHES)
        db = accuracy[case]
        print(
            f"| {case} | {names[case]} | {cells} | {'inf' if db == float('inf') else f'{db:.1f} dB'} | "
            f"{resident[case] / 2**20:.0f} MiB ({resident[case] / float_bytes:.2f}x) |"
        )
    print("\n(x float) = float time / case time: above 1 is faster than float.")
    print(
        "Targets: int8 dynamic >= 2x faster than float at batch 1 and never slower; "
        "weight-only no slower than 1/1.2 = 0.83x float."
    )
    print(f"\nTotal {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
