"""QuantConfig(device="cuda") against the CPU, on a machine with a CUDA GPU (issue 16).

For all-MiniLM-L6-v2 (int8 dynamic, int4 g128 weight-only, GPTQ int4 g128 with 56 calibration
sentences) and, with ``--large``, bench/bench_large.py's generated checkpoint opened lazily (its
layers read straight onto the GPU), quantizes on the CPU and on ``cuda``, and prints: time of
each and their ratio, the report's device, the share of weight codes equal between the two (float
rounding on the GPU may move a few codes by one step), the output SQNR of each against the float
model on held-out sentences, and whether the file saved from the GPU run loads on the CPU and
gives the same outputs as the GPU run's model.  Exits 1 when there is no CUDA device.

Usage: ``python bench/bench_cuda.py [--large --cache DIR]``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "core"))


def timed(fn):
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    out = fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return out, time.perf_counter() - t0


def equal_codes(a: torch.nn.Module, b: torch.nn.Module) -> float:
    sa, sb = a.state_dict(), b.state_dict()
    same = total = 0
    for k, t in sa.items():
        if t.dtype in (torch.int8, torch.uint8):
            u = sb[k].cpu()
            same += int((t.cpu() == u).sum())
            total += t.numel()
    return same / total if total else 1.0


def minilm_rows() -> list[str]:
    from algorithm_models import CALIBRATION, MORE_CALIBRATION, SENTENCES, batches, minilm, output_sqnr_db

    from mono_quant_core import QuantConfig, load_quantized, quantize, save_quantized

    model = minilm()
    calibration = batches(SENTENCES[:CALIBRATION] + MORE_CALIBRATION, size=4)
    held_out = batches(SENTENCES[CALIBRATION:], size=4)
    int4 = QuantConfig(dtype="int4", mode="weight-only", granularity="per-group", group_size=128)
    cases = {"int8 dynamic": QuantConfig(), "int4 g128": int4, "GPTQ int4 g128": int4.replace(algorithm="gptq")}
    rows = []
    for name, config in cases.items():
        cpu, t_cpu = timed(lambda c=config: quantize(model, c.replace(device="cpu"), calibration=calibration))
        gpu, t_gpu = timed(lambda c=config: quantize(model, c.replace(device="cuda"), calibration=calibration))
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / "gpu.safetensors"
            save_quantized(gpu, path)
            reloaded = load_quantized(path, script=ROOT / "tests/core/data_loading/minilm_model.py")
            with torch.no_grad():
                batch = held_out[0]
                a = reloaded(**batch).last_hidden_state
                b = gpu.model.cpu()(**batch).last_hidden_state
            same_file = bool(torch.allclose(a, b, atol=1e-4))
        rows.append(
            f"| MiniLM {name} | {t_cpu:.2f} s | {t_gpu:.2f} s | {t_cpu / t_gpu:.2f}× | {gpu.report.device} "
            f"| {equal_codes(cpu.model, gpu.model):.4f} | {output_sqnr_db(cpu.model, model, held_out):.2f} dB "
            f"| {output_sqnr_db(gpu.model.cpu(), model, held_out):.2f} dB | {'yes' if same_file else 'NO'} |"
        )
    return rows


def large_rows(cache: Path) -> list[str]:
    from mono_quant_core import QuantConfig, open_model, quantize

    index = next(cache.glob("*/model.safetensors.index.json"), None)
    if index is None:
        raise SystemExit(f"no checkpoint under {cache}: run bench/bench_large.py first")
    config = QuantConfig(dtype="int4", mode="weight-only", granularity="per-group", group_size=128)
    rows = []
    results = {}
    for device in ("cpu", "cuda"):
        loaded = open_model(index.parent / "decoder.py", index, lazy=True)
        results[device], seconds = timed(
            lambda d=device, m=loaded.model: quantize(m, config.replace(device=d), validate=False)
        )
        rows.append(f"| 7B-class int4 g128 (lazy) | {device} | {seconds:.1f} s | {results[device].report.device} |")
    rows.append(f"| codes equal cpu/cuda | {equal_codes(results['cpu'].model, results['cuda'].model):.4f} | | |")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--large", action="store_true")
    parser.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "mono-quant" / "bench-large")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("no CUDA device: nothing to compare")
        sys.exit(1)
    print(f"device: {torch.cuda.get_device_name(0)}, torch {torch.__version__}")
    print(
        "| case | CPU | CUDA | CPU / CUDA | report.device | codes equal | SQNR (CPU) | SQNR (CUDA) "
        + "| file loads on CPU |"
    )
    print("|---|---:|---:|---:|---|---:|---:|---:|---|")
    for row in minilm_rows():
        print(row)
    if args.large:
        for row in large_rows(args.cache):
            print(row)


if __name__ == "__main__":
    main()
