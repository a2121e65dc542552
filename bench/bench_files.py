"""Quantized files: save and load time against plain safetensors, and file sizes.

A Linear-heavy model (~84 MB float32: five 2048x2048 Linear layers) is
quantized to int8 (dynamic, per-channel) and int4 (weight-only, group 128).
References measured in the same run on the same tensors:

- save: ``safetensors.torch.save_file`` of the quantized state dict (no fsync),
  and the same followed by an fsync (``save_quantized`` always syncs, it is atomic);
- load: ``safetensors.torch.load_file``; ``load_quantized`` is timed with a
  float model instance and with the model script (the architecture is then
  built on the meta device).

The cases run round by round (each round times every case once), so disk
writeback and machine load hit them alike; each timing is the median of
``REPEAT`` rounds.  Usage: ``python bench/bench_files.py``.
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
from functools import partial

import torch
from safetensors.torch import load_file, save_file

from mono_quant_core import QuantConfig, load_quantized, quantize, save_quantized
from mono_quant_core.serialization.file_tensors import file_tensors

REPEAT = 21
SCRIPT = """
from torch import nn

def build_model():
    return nn.Sequential(*[nn.Linear(2048, 2048) for _ in range(5)])
"""


def median_times(cases: dict) -> dict[str, float]:
    """Median seconds of each callable, timed round by round."""
    times: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(REPEAT):
        for name, fn in cases.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    return {name: statistics.median(ts) for name, ts in times.items()}


def save_and_sync(tensors, path) -> None:
    save_file(tensors, path)
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def main() -> None:
    torch.manual_seed(0)
    torch.set_num_threads(2)
    folder = tempfile.mkdtemp(prefix="mono_quant_bench_")
    script = os.path.join(folder, "model.py")
    with open(script, "w") as f:
        f.write(SCRIPT)
    from mono_quant_core import load_model

    model = load_model(script)
    float_path = os.path.join(folder, "float.safetensors")
    save_file(model.state_dict(), float_path)
    float_bytes = os.path.getsize(float_path)
    print(
        f"Model: 5 x Linear(2048, 2048), float file {float_bytes / 1e6:.1f} MB; "
        f"median of {REPEAT} runs; torch {torch.__version__}, {torch.get_num_threads()} threads\n"
    )
    print(
        "| case | file MB | / float file | save s | / save_file | / save_file+fsync "
        "| load s (model) | load s (script) | / load_file |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    configs = {
        "int8 dynamic per-channel": QuantConfig(),
        "int4 weight-only group 128": QuantConfig(
            dtype="int4", mode="weight-only", granularity="per-group", group_size=128
        ),
    }
    for label, config in configs.items():
        result = quantize(model, config, validate=False)
        tensors, _ = file_tensors(result.model)
        ref_path = os.path.join(folder, "ref.safetensors")
        out = os.path.join(folder, "out.safetensors")
        saves = median_times(
            {
                "ref": partial(save_file, tensors, ref_path),
                "ref_sync": partial(save_and_sync, tensors, ref_path),
                "save": partial(save_quantized, result, out),
            }
        )
        loads = median_times(
            {
                "ref": partial(load_file, ref_path),
                "model": partial(load_quantized, out, model=model),
                "script": partial(load_quantized, out, script=script),
            }
        )
        t_ref, t_ref_sync, t_save = saves["ref"], saves["ref_sync"], saves["save"]
        t_load_ref, t_load_model, t_load_script = loads["ref"], loads["model"], loads["script"]
        size = os.path.getsize(out)
        print(
            f"| {label} | {size / 1e6:.1f} | {size / float_bytes:.3f}x | {t_save:.4f} | "
            f"{t_save / t_ref:.2f}x | {t_save / t_ref_sync:.2f}x | {t_load_model:.4f} "
            f"({t_load_model / t_load_ref:.2f}x) | {t_load_script:.4f} ({t_load_script / t_load_ref:.2f}x) "
            f"| load_file {t_load_ref:.4f} s |"
        )
    print("\nTargets: save <= 1.2x save_file; int8 file <= 0.27x and int4 file <= 0.16x the float file.")
    for name in os.listdir(folder):
        os.remove(os.path.join(folder, name))
    os.rmdir(folder)


if __name__ == "__main__":
    sys.exit(main())
