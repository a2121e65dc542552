"""Quantization of a ~100M-parameter model: time and peak memory, side by side.

``mono_quant_dynamic`` is ``quantize(validate=False)``; the fbgemm weight
packing happens at the first forward, which ``..._first_forward`` includes.
``..._validated`` adds the validation every GUI/CLI run does (held-out output
SQNR on 4 samples, per-layer output SQNR, the save → load → run round trip).

References measured in the same run: ``torch.ao.quantization.quantize_dynamic``
and ``copy.deepcopy`` of the same model.  Each case runs in a fresh process so
peak RSS is its own.  Usage: ``python bench/bench_quantize.py``.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys

CASES = [
    "deepcopy",
    "ao_quantize_dynamic",
    "mono_quant_dynamic",
    "mono_quant_dynamic_first_forward",
    "mono_quant_dynamic_validated",
    "mono_quant_weight_only_int4",
]

#: Fresh processes per case; the median is reported.
REPEAT = 3

CHILD = r"""
import copy, gc, json, sys, time, warnings
sys.path.insert(0, {bench!r})
import torch
from torch import nn
from _rss import peak, reset_peak, rss
torch.manual_seed(0)
torch.set_num_threads(2)
# ~100.7M parameters: six 4096x4096 Linear layers with biases.
model = nn.Sequential(*[nn.Linear(4096, 4096) for _ in range(6)]).eval()
float_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
case = {case!r}
samples = [torch.randn(4, 4096) for _ in range(4)]
if case.startswith("mono"):
    from mono_quant_core import QuantConfig, quantize
    quantize(nn.Sequential(nn.Linear(8, 8)), QuantConfig())  # warm the imports
gc.collect()
base = rss(); reset_peak()
t0 = time.perf_counter()
if case == "deepcopy":
    out = copy.deepcopy(model)
elif case == "ao_quantize_dynamic":
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = torch.ao.quantization.quantize_dynamic(model, {{nn.Linear}}, dtype=torch.qint8, inplace=False)
elif case == "mono_quant_dynamic":
    out = quantize(model, QuantConfig(), validate=False)
elif case == "mono_quant_dynamic_first_forward":
    # quantize_dynamic packs fbgemm weights at once; mono-quant packs at the first
    # forward: this case counts that too, for a like-for-like comparison.
    out = quantize(model, QuantConfig(), validate=False)
    with torch.inference_mode():
        out.model(samples[0])
elif case == "mono_quant_dynamic_validated":
    out = quantize(model, QuantConfig(), calibration=samples)
elif case == "mono_quant_weight_only_int4":
    out = quantize(model, QuantConfig(dtype="int4", mode="weight-only", granularity="per-group"), validate=False)
elapsed = time.perf_counter() - t0
print(json.dumps({{"case": case, "s": elapsed, "peak_over_base": peak() - base, "float_bytes": float_bytes}}))
"""


def main() -> None:
    here = os.path.dirname(os.path.abspath(__file__))
    runs = {case: [] for case in CASES}
    for _ in range(REPEAT):  # round by round, so machine load hits every case alike
        for case in CASES:
            out = subprocess.run(
                [sys.executable, "-c", CHILD.format(bench=here, case=case)], capture_output=True, text=True, check=True
            )
            runs[case].append(json.loads(out.stdout.strip().splitlines()[-1]))
    rows = {
        case: {
            "s": statistics.median(r["s"] for r in rs),
            "peak_over_base": statistics.median(r["peak_over_base"] for r in rs),
            "float_bytes": rs[0]["float_bytes"],
        }
        for case, rs in runs.items()
    }
    fb = rows["deepcopy"]["float_bytes"]
    ref_ao, ref_copy = rows["ao_quantize_dynamic"]["s"], rows["deepcopy"]["s"]
    print(f"Model: 6 x Linear(4096, 4096), {fb / 2**20:.0f} MiB float32; median of {REPEAT} fresh processes\n")
    print("| case | time (s) | / quantize_dynamic | / deepcopy | peak RSS over baseline | / float bytes |")
    print("|---|---|---|---|---|---|")
    for case, r in rows.items():
        print(
            f"| {case} | {r['s']:.2f} | {r['s'] / ref_ao:.2f}x | {r['s'] / ref_copy:.2f}x | "
            f"{r['peak_over_base'] / 2**20:.0f} MiB | {r['peak_over_base'] / fb:.2f}x |"
        )
    print(
        "\nTargets: mono_quant_dynamic faster than quantize_dynamic, within 3x of deepcopy, "
        "peak RSS over baseline <= 0.6x the float bytes."
    )


if __name__ == "__main__":
    main()
