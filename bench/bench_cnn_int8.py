"""Static int8 CNN and Linear inference: float vs mono-quant static int8 vs ``torch.ao`` static, side by side.

Two CNNs built here (no torchvision): a ResNet-18-shaped network (BasicBlocks
64-128-256-512, residual adds, BatchNorm, 224 x 224 input, 1000 classes) and a
wide Conv2d + BatchNorm network (five 3 x 3 convolutions up to 512 channels on
a 96 x 96 input).  Each at batch 1 and 16, four cases timed in one process,
interleaved round by round (machine load hits all alike), median reported:

- ``float32``: the model as built (BatchNorm separate);
- ``float32 BN folded``: BatchNorm folded into the convolutions (the float
  baseline an inference runtime would use);
- ``mono-quant static int8``: ``quantize(model, QuantConfig(mode="static"))``
  calibrated on 8 batches; with ``QuantConfig(fold_batchnorm=True)`` when this
  mono-quant has that option, else on the model with BatchNorm folded by
  ``torch.nn.utils.fusion.fuse_conv_bn_eval`` first (the line above the table
  says which);
- ``mono-quant static int8 + optimize_int8``: the same quantized model rewritten by
  ``mono_quant_core.optimize_int8`` on one calibration batch (uint8 activations between int8
  layers, ReLU and residual adds fused into the convolutions, outputs that only pools or a
  shortcut read on their own grids calibrated on that batch; the model and its file unchanged);
- ``torch.ao static``: FX graph mode ``prepare_fx`` / ``convert_fx`` with the
  default x86 qconfig mapping (it folds BatchNorm itself, fuses Conv+ReLU and
  add+ReLU, and keeps activations quint8 between layers), calibrated alike.

Output SQNR of each case against ``float32`` on held-out inputs.  Then a stack
of 4 x Linear(4096, 4096): mono-quant static int8 against mono-quant dynamic
int8 at batch 1, 16 and 128.

Usage: ``python bench/bench_cnn_int8.py [--quick] [--stat min] [--only resnet|wide|linear]``
(about 3 minutes on 2 cores; ``--quick``: smaller inputs and fewer rounds, for a smoke run;
``--stat min``: the best round instead of the median, for a machine shared with other work).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import warnings
from collections.abc import Callable

import torch
from torch import nn

#: Seconds of timing per case and batch (at least 3 calls each).
BUDGET_S = 1.0
CNN_BATCHES = (1, 16)
LINEAR_BATCHES = (1, 16, 128)
CALIBRATION_BATCHES = 8


# -- models -------------------------------------------------------------------------------
class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.relu2 = nn.ReLU()
        self.down: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.down = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.bn2(self.conv2(self.relu1(self.bn1(self.conv1(x)))))
        return self.relu2(y + self.down(x))


class ResNet18(nn.Module):
    """ResNet-18's layout: 7 x 7 stem, max-pool, 4 stages of 2 BasicBlocks, average pool, fc."""

    def __init__(self, classes: int = 1000) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(3, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d(3, 2, 1)
        )
        blocks, cin = [], 64
        for cout, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
            blocks += [BasicBlock(cin, cout, stride), BasicBlock(cout, cout, 1)]
            cin = cout
        self.blocks = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(512, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(self.blocks(self.stem(x))), 1))


def wide_cnn(classes: int = 10) -> nn.Sequential:
    """Wide Conv2d + BatchNorm + ReLU layers with max-pooling, then a classifier."""
    layers: list[nn.Module] = []
    cin = 3
    for cout, stride in ((64, 1), (128, 2), (256, 1), (256, 2), (512, 1)):
        layers += [nn.Conv2d(cin, cout, 3, stride, 1), nn.BatchNorm2d(cout), nn.ReLU()]
        cin = cout
    layers += [nn.MaxPool2d(2), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(cin, classes)]
    return nn.Sequential(*layers)


def randomize_batchnorm(model: nn.Module, seed: int) -> nn.Module:
    """Non-trivial BatchNorm statistics (a trained model's are never the identity)."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            n = m.num_features
            m.running_mean.copy_(0.1 * torch.randn(n, generator=g))
            m.running_var.copy_(0.5 + torch.rand(n, generator=g))
            m.weight.data.copy_(0.5 + torch.rand(n, generator=g))
            m.bias.data.copy_(0.1 * torch.randn(n, generator=g))
    return model.eval()


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """``model`` with its Conv → BatchNorm pairs folded (mono-quant's own folding, on a copy)."""
    from mono_quant_core.folding import fold_batchnorm as fold

    return fold(model).model.eval()


# -- quantized variants -----------------------------------------------------------------
def mono_static(model: nn.Module, calibration: list[torch.Tensor], **extra: object) -> nn.Module:
    from mono_quant_core import QuantConfig, quantize

    config = QuantConfig(mode="static", fold_batchnorm=True, **extra)  # type: ignore[arg-type]
    return quantize(model, config, calibration=calibration, validate=False).model


def ao_static(model: nn.Module, calibration: list[torch.Tensor]) -> nn.Module:
    import copy

    from torch.ao.quantization import get_default_qconfig_mapping
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

    torch.backends.quantized.engine = "x86"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        prepared = prepare_fx(copy.deepcopy(model), get_default_qconfig_mapping("x86"), (calibration[0],))
        with torch.inference_mode():
            for x in calibration:
                prepared(x)
        return convert_fx(prepared)


OPTIMIZED = "mono-quant static int8 + optimize_int8"


def optimized_int8(model: nn.Module, example: torch.Tensor) -> nn.Module:
    """``model`` rewritten by ``optimize_int8`` (checked against ``model`` on ``example``)."""
    from mono_quant_core import optimize_int8

    return optimize_int8(model, example)


def mono_dynamic(model: nn.Module) -> nn.Module:
    from mono_quant_core import QuantConfig, quantize

    return quantize(model, QuantConfig(mode="dynamic"), validate=False).model


# -- measuring --------------------------------------------------------------------------------
def sqnr(reference: torch.Tensor, y: torch.Tensor) -> float:
    from mono_quant_core.tensor import sqnr_db

    return float(sqnr_db(reference, y))


def kernels_of(model: nn.Module) -> str:
    names = {str(m.kernel) for m in model.modules() if hasattr(m, "kernel")}
    return ",".join(sorted(names)) or "-"


#: How the timed rounds of a case are summarized: ``median`` (default) or ``min`` (``--stat min``:
#: the best round, less sensitive to other processes on a shared machine).
STAT: Callable[[list[float]], float] = statistics.median


def interleaved(models: dict[str, nn.Module], x: torch.Tensor, budget: float) -> dict[str, float]:
    """Seconds per forward of each model on ``x`` (``STAT`` of its rounds), timed round by round."""
    samples: dict[str, list[float]] = {case: [] for case in models}
    with torch.inference_mode():
        for model in models.values():
            model(x)  # warm-up (packs kernels)
        spent = 0.0
        while spent < budget * len(models) or min(len(s) for s in samples.values()) < 3:
            for case, model in models.items():
                t0 = time.perf_counter()
                model(x)
                dt = time.perf_counter() - t0
                samples[case].append(dt)
                spent += dt
    return {case: STAT(s) for case, s in samples.items()}


def cnn_table(name: str, build: Callable[[], nn.Module], size: int, budget: float, layout: str = "contiguous") -> None:
    """One CNN's table; ``layout``: the inputs' memory format (``channels_last``: every model gets
    channels-last inputs, the fast layout of torch's CPU convolutions, float's as well)."""
    fmt = torch.channels_last if layout == "channels_last" else torch.contiguous_format
    torch.manual_seed(0)
    model = randomize_batchnorm(build(), 1)
    g = torch.Generator().manual_seed(2)
    calibration = [torch.randn(4, 3, size, size, generator=g) for _ in range(CALIBRATION_BATCHES)]
    held_out = torch.randn(4, 3, size, size, generator=g)
    mono = mono_static(model, calibration)
    models = {
        "float32": model,
        "float32 BN folded": fold_batchnorm(model),
        "mono-quant static int8": mono,
        OPTIMIZED: optimized_int8(mono, calibration[0]),
        "torch.ao static (x86)": ao_static(fold_batchnorm(model), calibration),
    }
    with torch.inference_mode():
        held_out = held_out.contiguous(memory_format=fmt)
        reference = model(held_out)
        accuracy = {case: sqnr(reference, m(held_out)) for case, m in models.items()}
    times = {
        b: interleaved(models, torch.randn(b, 3, size, size, generator=g).contiguous(memory_format=fmt), budget)
        for b in CNN_BATCHES
    }
    print(f"\n### {name} ({size} x {size} input, {layout.replace('_', '-')} inputs)\n")
    head = " | ".join(f"batch {b}: ms (x float)" for b in CNN_BATCHES)
    print(f"| case | {head} | output SQNR |")
    print("|---|" + "---|" * len(CNN_BATCHES) + "---|")
    for case in models:
        cells = " | ".join(
            f"{times[b][case] * 1e3:.1f} ({times[b]['float32'] / times[b][case]:.2f}x)" for b in CNN_BATCHES
        )
        db = accuracy[case]
        print(f"| {case} | {cells} | {'inf' if db == float('inf') else f'{db:.1f} dB'} |")
    mono, ao = "mono-quant static int8", "torch.ao static (x86)"
    ratios = ", ".join(f"batch {b}: {times[b][ao] / times[b][mono]:.2f}x" for b in CNN_BATCHES)
    print(f"\nmono-quant static speed / torch.ao static speed: {ratios}; kernels: {kernels_of(models[mono])}")
    ratios = ", ".join(f"batch {b}: {times[b][ao] / times[b][OPTIMIZED]:.2f}x" for b in CNN_BATCHES)
    report = getattr(models[OPTIMIZED], "int8_report", None)
    fused = "" if report is None else f"; {report.uint8_edges} uint8 edges, fused {report.fused}"
    if report is not None and getattr(report, "output_grids", None):
        fused += f", own output grids for {', '.join(report.output_grids)}"
    print(f"mono-quant static + optimize_int8 speed / torch.ao static speed: {ratios}{fused}")


def linear_table(budget: float) -> None:
    torch.manual_seed(0)
    model = nn.Sequential(*[nn.Linear(4096, 4096) for _ in range(4)]).eval()
    g = torch.Generator().manual_seed(3)
    calibration = [torch.randn(16, 4096, generator=g) for _ in range(CALIBRATION_BATCHES)]
    held_out = torch.randn(8, 4096, generator=g)
    models = {"float32": model, "mono-quant dynamic int8": mono_dynamic(model)}
    models["mono-quant static int8"] = mono_static(model, calibration)
    with torch.inference_mode():
        reference = model(held_out)
        accuracy = {case: sqnr(reference, m(held_out)) for case, m in models.items()}
    times = {b: interleaved(models, torch.randn(b, 4096, generator=g), budget) for b in LINEAR_BATCHES}
    print("\n### 4 x Linear(4096, 4096)\n")
    head = " | ".join(f"batch {b}: ms (x float)" for b in LINEAR_BATCHES)
    print(f"| case | kernel | {head} | output SQNR |")
    print("|---|---|" + "---|" * len(LINEAR_BATCHES) + "---|")
    for case, m in models.items():
        cells = " | ".join(
            f"{times[b][case] * 1e3:.2f} ({times[b]['float32'] / times[b][case]:.2f}x)" for b in LINEAR_BATCHES
        )
        print(f"| {case} | {kernels_of(m)} | {cells} | {accuracy[case]:.1f} dB |")
    dyn, st = "mono-quant dynamic int8", "mono-quant static int8"
    ratios = ", ".join(f"batch {b}: {times[b][dyn] / times[b][st]:.2f}x" for b in LINEAR_BATCHES)
    print(f"\nstatic speed / dynamic speed: {ratios}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small inputs and short timing (a smoke run)")
    parser.add_argument("--only", choices=("resnet", "wide", "linear"), action="append", help="run only these parts")
    parser.add_argument("--stat", choices=("median", "min"), default="median", help="summary of the timed rounds")
    parser.add_argument(
        "--layout",
        choices=("contiguous", "channels_last", "both"),
        default="both",
        help="the CNN inputs' memory format (outputs keep it, as torch's convolutions do)",
    )
    args = parser.parse_args(argv)
    global STAT
    STAT = min if args.stat == "min" else statistics.median
    budget = 0.05 if args.quick else BUDGET_S
    parts = args.only or ["resnet", "wide", "linear"]
    start = time.perf_counter()
    folding = "QuantConfig(fold_batchnorm=True)"
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.stat} of the timed rounds, "
        f"quantized engine for torch.ao: x86; mono-quant BatchNorm folding: {folding}"
    )
    layouts = ["contiguous", "channels_last"] if args.layout == "both" else [args.layout]
    for layout in layouts:
        if "resnet" in parts:
            cnn_table("ResNet-18-shaped CNN", ResNet18, 64 if args.quick else 224, budget, layout)
        if "wide" in parts:
            cnn_table("Wide Conv2d + BatchNorm CNN", wide_cnn, 32 if args.quick else 96, budget, layout)
    if "linear" in parts:
        linear_table(budget)
    print(
        "\n(x float) = float32 time / case time: above 1 is faster.  Targets: static int8 CNN >= 1.5x float at "
        "every batch, SQNR >= 30 dB, >= 0.9x torch.ao's speed; static Linear >= dynamic at every batch."
    )
    print(f"\nTotal {time.perf_counter() - start:.0f} s", file=sys.stderr)


if __name__ == "__main__":
    main()
