"""What do the algorithms buy, and what do they cost?  Measured against round-to-nearest in the same run.

For all-MiniLM-L6-v2 (int4 g128 weight-only: RTN, GPTQ, HQQ; int8 static: RTN, SmoothQuant alpha 0.5)
and a digits CNN trained in seconds (int4 g128 weight-only: RTN, GPTQ, HQQ; int8 weight-only and
static: RTN, bias correction): output SQNR against the float model on held-out inputs, the task
measure (MiniLM: mean cosine of the sentence embeddings; CNN: top-1 on held-out digits), the
quantization time as a ratio to RTN's of the same dtype and mode, and the peak RSS of the run.
Each case runs in a fresh process (``--case N``), so its peak RSS is its own: the figure is the
peak over the RSS once the model and data are loaded.

Usage: ``python bench/bench_algorithms.py`` (several minutes on 2 cores; all-MiniLM-L6-v2 comes
with the dev extra).  Measure on a quiet machine.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "core"))

from _rss import peak, reset_peak, rss  # noqa: E402

from mono_quant_core import QuantConfig, quantize  # noqa: E402

INT4_G128 = QuantConfig(dtype="int4", mode="weight-only", granularity="per-group", group_size=128)
INT8_STATIC = QuantConfig(mode="static")
INT8_WEIGHT = QuantConfig(mode="weight-only", granularity="per-tensor")
INT8_STATIC_TENSOR = QuantConfig(mode="static", granularity="per-tensor")

#: (model, label, reference label, config); the reference is RTN of the same dtype and mode.
CASES = [
    ("minilm", "RTN int4 g128", "RTN int4 g128", INT4_G128),
    ("minilm", "GPTQ int4 g128", "RTN int4 g128", INT4_G128.replace(algorithm="gptq")),
    ("minilm", "HQQ int4 g128", "RTN int4 g128", INT4_G128.replace(algorithm="hqq")),
    ("minilm", "RTN int8 static", "RTN int8 static", INT8_STATIC),
    ("minilm", "SmoothQuant int8 static alpha 0.5", "RTN int8 static", INT8_STATIC.replace(smoothquant_alpha=0.5)),
    ("cnn", "RTN int4 g128", "RTN int4 g128", INT4_G128),
    ("cnn", "GPTQ int4 g128", "RTN int4 g128", INT4_G128.replace(algorithm="gptq")),
    ("cnn", "HQQ int4 g128", "RTN int4 g128", INT4_G128.replace(algorithm="hqq")),
    ("cnn", "RTN int8 weight-only", "RTN int8 weight-only", INT8_WEIGHT),
    ("cnn", "bias correction int8 weight-only", "RTN int8 weight-only", INT8_WEIGHT.replace(bias_correction=True)),
    ("cnn", "RTN int8 static", "RTN int8 static", INT8_STATIC_TENSOR),
    ("cnn", "bias correction int8 static", "RTN int8 static", INT8_STATIC_TENSOR.replace(bias_correction=True)),
]


def minilm_case(config: QuantConfig) -> dict[str, float]:
    from algorithm_models import CALIBRATION, MORE_CALIBRATION, SENTENCES, batches, mean_cosine, minilm, output_sqnr_db

    model = minilm()
    calibration = batches(SENTENCES[:CALIBRATION] + MORE_CALIBRATION, size=4)
    held_out = batches(SENTENCES[CALIBRATION:], size=4)
    base = rss()
    reset_peak()
    started = time.perf_counter()
    result = quantize(model, config, calibration=calibration)
    seconds = time.perf_counter() - started
    over = peak() - base
    return {
        "seconds": seconds,
        "peak_mib": over / 2**20,
        "sqnr_db": output_sqnr_db(result.model, model, held_out),
        "task": mean_cosine(result.model, model, held_out),
    }


def cnn_case(config: QuantConfig) -> dict[str, float]:
    from test_bias_correction import digits_cnn, top1
    from test_quantize import output_sqnr

    model, calibration, x, y = digits_cnn()
    base = rss()
    reset_peak()
    started = time.perf_counter()
    result = quantize(model, config, calibration=calibration)
    seconds = time.perf_counter() - started
    over = peak() - base
    return {
        "seconds": seconds,
        "peak_mib": over / 2**20,
        "sqnr_db": output_sqnr(model, result.model, list(x.split(100))),
        "task": top1(result.model, x, y),
        "float_task": top1(model, x, y),
    }


def run_case(index: int) -> None:
    torch.manual_seed(0)
    kind, _, _, config = CASES[index]
    print(json.dumps(minilm_case(config) if kind == "minilm" else cnn_case(config)))


def main() -> None:
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    results = []
    for index in range(len(CASES)):
        out = subprocess.run(
            [sys.executable, __file__, "--case", str(index)], check=True, capture_output=True, text=True
        )
        results.append(json.loads(out.stdout.strip().splitlines()[-1]))
        print(f"  {CASES[index][0]}: {CASES[index][1]} done", file=sys.stderr)
    seconds = {(c[0], c[1]): r["seconds"] for c, r in zip(CASES, results, strict=True)}
    print("| model | case | output SQNR | task measure | time | / RTN | peak RSS |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for (kind, label, reference, _), r in zip(CASES, results, strict=True):
        measure = f"cosine {r['task']:.4f}" if kind == "minilm" else f"top-1 {r['task']:.3f}"
        ratio = r["seconds"] / seconds[(kind, reference)]
        name = "all-MiniLM-L6-v2" if kind == "minilm" else f"digits CNN (float top-1 {r['float_task']:.3f})"
        print(
            f"| {name} | {label} | {r['sqnr_db']:.1f} dB | {measure} | {r['seconds']:.2f} s | "
            f"{ratio:.2f}× | {r['peak_mib']:.0f} MiB |"
        )


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--case":
        run_case(int(sys.argv[2]))
    else:
        main()
