"""Peak memory of loading a checkpoint into a model built by its script, side by side.

Every case runs in a fresh process: baseline RSS is taken after the imports,
then the script builds the model and the checkpoint is loaded into it.  The
table shows peak RSS over that baseline as a multiple of the checkpoint size
(1.0 = the model alone; the model's own weights cannot be avoided) and what
came on top of the model.  References measured in the same run: plain
``torch.load`` and ``safetensors.torch.load_file`` followed by
``load_state_dict``.  Usage: ``python bench/bench_checkpoint_memory.py [--mib 1024]``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent

MODEL_SCRIPT = """
from torch import nn

LAYERS = {layers}

def build_model():
    return nn.Sequential(*[nn.Linear(4096, 4096, bias=False) for _ in range(LAYERS)])
"""

CASES = {
    "model only (no checkpoint)": "build",
    "torch.load + load_state_dict": "torch_load",
    "safetensors load_file + load_state_dict": "st_load_file",
    "mono_quant load_model (.pt)": "mono_pt",
    "mono_quant load_model (.safetensors)": "mono_st",
}

CHILD = r"""
import gc, json, sys, time
sys.path[:0] = [{bench!r}, {root!r}]
import torch
from _rss import peak, reset_peak, rss
from safetensors.torch import load_file
from mono_quant_core.loading import import_script, load_model
torch.set_num_threads(1)
script, pt, st, case = {script!r}, {pt!r}, {st!r}, {case!r}
build = import_script(script).build_model
gc.collect()
base = rss(); reset_peak()
t0 = time.perf_counter()
if case == "build":
    model = build()
elif case == "torch_load":
    model = build()
    model.load_state_dict(torch.load(pt, map_location="cpu", weights_only=True))
elif case == "st_load_file":
    model = build()
    model.load_state_dict(load_file(st))
elif case == "mono_pt":
    model = load_model(script, pt)
elif case == "mono_st":
    model = load_model(script, st)
elapsed = time.perf_counter() - t0
gc.collect()
print(json.dumps({{"peak": peak() - base, "end": rss() - base, "s": elapsed,
                   "model": sum(p.numel() * p.element_size() for p in model.parameters())}}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=1024, help="checkpoint size (multiples of 64 MiB)")
    size_mib = max(64, parser.parse_args().mib // 64 * 64)
    import torch
    from safetensors.torch import save_file

    with tempfile.TemporaryDirectory(prefix="mq-bench-") as tmp:
        folder = Path(tmp)
        script = folder / "model.py"
        script.write_text(MODEL_SCRIPT.format(layers=size_mib // 64))
        gen = torch.Generator().manual_seed(0)
        state = {f"{i}.weight": torch.randn(4096, 4096, generator=gen) for i in range(size_mib // 64)}
        torch.save(state, folder / "ckpt.pt")
        save_file(state, folder / "ckpt.safetensors")
        del state
        ckpt_bytes = (folder / "ckpt.pt").stat().st_size
        print(f"checkpoint: {ckpt_bytes / 2**20:.0f} MiB ({size_mib // 64} x Linear 4096x4096, float32)")
        print(f"{'case':42s} {'peak/ckpt':>9s} {'over model':>10s} {'end/ckpt':>8s} {'time s':>7s}")
        for label, case in CASES.items():
            code = CHILD.format(
                bench=str(BENCH),
                root=str(ROOT),
                script=str(script),
                pt=str(folder / "ckpt.pt"),
                st=str(folder / "ckpt.safetensors"),
                case=case,
            )
            started = time.perf_counter()
            out = subprocess.run(
                [sys.executable, "-c", code],
                capture_output=True,
                text=True,
                env=dict(os.environ, PYTHONDONTWRITEBYTECODE="1"),
            )
            if out.returncode:
                print(f"{label:42s} failed:\n{out.stderr}")
                continue
            r = json.loads(out.stdout.strip().splitlines()[-1])
            print(
                f"{label:42s} {r['peak'] / ckpt_bytes:9.2f} {(r['peak'] - r['model']) / ckpt_bytes:10.2f} "
                f"{r['end'] / ckpt_bytes:8.2f} {r['s']:7.2f}   ({time.perf_counter() - started:.0f} s with start-up)"
            )


if __name__ == "__main__":
    main()
