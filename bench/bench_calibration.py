"""Calibration of N samples against N plain forward passes of the float model, per observer.

Both are measured side by side in the same process, interleaved, best of
``--repeat`` runs each.  Targets: minmax <= 1.25x, histogram <= 2x.
Usage: ``python bench/bench_calibration.py [--samples 64] [--repeat 3] [--threads 2]``.
"""

from __future__ import annotations

import argparse
import time

import torch
from torch import nn

from mono_quant_core import QuantConfig
from mono_quant_core.calibration import calibrate

OBSERVERS = [
    ("minmax", "mse"),
    ("moving-average", "mse"),
    ("percentile", "mse"),
    ("histogram", "mse"),
    ("histogram", "entropy"),
]
TARGETS = {"minmax": 1.25, "histogram": 2.0}


def mlp() -> nn.Module:
    layers = []
    for _ in range(6):
        layers += [nn.Linear(1024, 1024), nn.ReLU()]
    return nn.Sequential(*layers).eval()


class Block(nn.Module):
    """Pre-norm encoder block with plain Linear layers (so every projection is a hookable module)."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.qkv, self.proj = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)
        self.fc1, self.fc2 = nn.Linear(dim, 4 * dim), nn.Linear(4 * dim, dim)

    def forward(self, x):
        b, t, d = x.shape
        q, k, v = self.qkv(self.norm1(x)).view(b, t, 3, self.heads, d // self.heads).unbind(2)
        q, k, v = (t.transpose(1, 2) for t in (q, k, v))
        a = nn.functional.scaled_dot_product_attention(q, k, v)
        x = x + self.proj(a.transpose(1, 2).reshape(b, t, d))
        return x + self.fc2(nn.functional.gelu(self.fc1(self.norm2(x))))


def encoder() -> nn.Module:
    return nn.Sequential(*[Block(256, 4) for _ in range(4)]).eval()


def plain_forwards(model: nn.Module, samples: list[torch.Tensor]) -> float:
    start = time.perf_counter()
    with torch.inference_mode():
        for x in samples:
            model(x)
    return time.perf_counter() - start


def calibration(model: nn.Module, names: list[str], samples, config: QuantConfig) -> float:
    start = time.perf_counter()
    calibrate(model, names, samples, config)
    return time.perf_counter() - start


def bench(label: str, model: nn.Module, samples: list[torch.Tensor], repeat: int) -> list[str]:
    names = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    configs = {
        f"{o}" + (f" ({m})" if o == "histogram" else ""): QuantConfig(mode="static", observer=o, histogram_method=m)
        for o, m in OBSERVERS
    }
    plain_forwards(model, samples[:4])  # warm up
    best_plain = float("inf")
    best = {k: float("inf") for k in configs}
    for _ in range(repeat):  # interleaved, so drift in machine load hits both sides
        best_plain = min(best_plain, plain_forwards(model, samples))
        for key, config in configs.items():
            best[key] = min(best[key], calibration(model, names, samples, config))
    rows = []
    for key, seconds in best.items():
        target = TARGETS.get(key.split(" ")[0]) if key != "histogram (entropy)" else None
        ratio = seconds / best_plain
        verdict = "" if target is None else (" ok" if ratio <= target else " OVER")
        rows.append(
            f"| {label} | {key} | {best_plain * 1e3:.0f} | {seconds * 1e3:.0f} | {ratio:.2f}x |"
            f" {'' if target is None else f'<= {target}x'}{verdict} |"
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=64)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    g = torch.Generator().manual_seed(1)
    cases = [
        (
            "MLP 6x Linear(1024, 1024), batch 64",
            mlp(),
            [torch.randn(64, 1024, generator=g) for _ in range(args.samples)],
        ),
        (
            "encoder 4 blocks d=256, batch 4x128",
            encoder(),
            [torch.randn(4, 128, 256, generator=g) for _ in range(args.samples)],
        ),
    ]
    print(
        f"N = {args.samples} samples, best of {args.repeat}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads\n"
    )
    print("| model | observer | N forwards (ms) | calibration (ms) | ratio | target |")
    print("|---|---|---|---|---|---|")
    for label, model, samples in cases:
        for row in bench(label, model, samples, args.repeat):
            print(row)


if __name__ == "__main__":
    main()
