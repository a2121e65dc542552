"""A 7B-class checkpoint quantized from the command line on a machine with less memory than its weights.

Generates once, into a cache folder outside the repository (``--cache``, default
``~/.cache/mono-quant/bench-large``), a LLaMA-7B-shaped decoder checkpoint in bf16: 32 blocks of
hidden size 4096 with MLP 11008, 32 heads, vocabulary 32000 (6.74 B parameters, 13.5 GB) as
sharded safetensors with an index, plus its model script (RMSNorm, attention and a gated MLP; no
rotary embedding: the benchmark is about weights).  Random weights: quantization time and memory
do not depend on their values.

Then, for int4 weight-only group 128 and int8 weight-only, it runs ``mono-quant quantize`` in a
fresh process that records its own resident memory (baseline after imports, peak during the
command) and reports wall time, peak RSS as a ratio to the checkpoint's size (target <= 0.3x
for int4) and the peak over the baseline.  Last, for a few layers it quantizes the same float
weights in memory (``quantize`` on that layer alone) and checks that the file holds exactly the
same codes and scales.  A third case, int8 static on 4 calibration samples of 32 tokens (one more
for validation), runs block by block (``mono_quant_core/sequential.py``); its equality with the
in-memory path is what ``tests/core/test_lazy_blocks.py`` checks, on models that fit in memory.

Usage: ``python bench/bench_large.py [--cache DIR] [--blocks 32 --hidden 4096 --mlp 11008]``
(smaller sizes for a quick run).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

SCRIPT = '''"""A LLaMA-shaped decoder (bench/bench_large.py)."""
import json
import os

import torch
import torch.nn.functional as F
from torch import nn

SIZES = json.loads(os.environ.get("BENCH_LARGE_SIZES", "{sizes}"))


class RMSNorm(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim, dtype=torch.bfloat16))

    def forward(self, x):
        return x * torch.rsqrt(x.float().pow(2).mean(-1, keepdim=True) + 1e-6).to(x.dtype) * self.weight


class Attention(nn.Module):
    def __init__(self, dim, heads):
        super().__init__()
        self.heads = heads
        self.q_proj, self.k_proj, self.v_proj, self.o_proj = (
            nn.Linear(dim, dim, bias=False, dtype=torch.bfloat16) for _ in range(4)
        )

    def forward(self, x):
        b, t, d = x.shape
        q, k, v = (p(x).view(b, t, self.heads, -1).transpose(1, 2) for p in (self.q_proj, self.k_proj, self.v_proj))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.o_proj(y.transpose(1, 2).reshape(b, t, d))


class MLP(nn.Module):
    def __init__(self, dim, hidden):
        super().__init__()
        self.gate_proj = nn.Linear(dim, hidden, bias=False, dtype=torch.bfloat16)
        self.up_proj = nn.Linear(dim, hidden, bias=False, dtype=torch.bfloat16)
        self.down_proj = nn.Linear(hidden, dim, bias=False, dtype=torch.bfloat16)

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class Block(nn.Module):
    def __init__(self, dim, hidden, heads):
        super().__init__()
        self.input_layernorm = RMSNorm(dim)
        self.self_attn = Attention(dim, heads)
        self.post_attention_layernorm = RMSNorm(dim)
        self.mlp = MLP(dim, hidden)

    def forward(self, x):
        x = x + self.self_attn(self.input_layernorm(x))
        return x + self.mlp(self.post_attention_layernorm(x))


class Decoder(nn.Module):
    def __init__(self):
        super().__init__()
        vocab, dim, hidden, blocks, heads = (SIZES[k] for k in ("vocab", "hidden", "mlp", "blocks", "heads"))
        self.embed_tokens = nn.Embedding(vocab, dim, dtype=torch.bfloat16)
        self.layers = nn.ModuleList(Block(dim, hidden, heads) for _ in range(blocks))
        self.norm = RMSNorm(dim)
        self.lm_head = nn.Linear(dim, vocab, bias=False, dtype=torch.bfloat16)

    def forward(self, input_ids):
        x = self.embed_tokens(input_ids)
        for layer in self.layers:
            x = layer(x)
        return self.lm_head(self.norm(x))
'''

#: Shard size of the generated checkpoint (as Hugging Face's 7B checkpoints: a few GB each).
SHARD_BYTES = 2 << 30

DRIVER = """
import sys, time
sys.path.insert(0, {bench!r})
import _rss
import torch  # noqa: F401 (the baseline holds torch and mono-quant, as the CLI does)
import mono_quant_core.quantizer, mono_quant_core.serialization.save  # noqa: F401
from mono_quant_core.cli.main import main

base = _rss.rss()
_rss.reset_peak()
t0 = time.perf_counter()
code = main(sys.argv[1:])
print("RESULT", _rss.peak(), base, time.perf_counter() - t0, flush=True)
sys.exit(code)
"""


def shapes(sizes: dict[str, int]) -> dict[str, tuple[int, ...]]:
    """Every tensor of the checkpoint and its shape, in model order."""
    d, h, v = sizes["hidden"], sizes["mlp"], sizes["vocab"]
    out: dict[str, tuple[int, ...]] = {"embed_tokens.weight": (v, d)}
    for i in range(sizes["blocks"]):
        p = f"layers.{i}."
        out[p + "input_layernorm.weight"] = (d,)
        for name in ("q_proj", "k_proj", "v_proj", "o_proj"):
            out[f"{p}self_attn.{name}.weight"] = (d, d)
        out[p + "post_attention_layernorm.weight"] = (d,)
        out[p + "mlp.gate_proj.weight"] = (h, d)
        out[p + "mlp.up_proj.weight"] = (h, d)
        out[p + "mlp.down_proj.weight"] = (d, h)
    out["norm.weight"] = (d,)
    out["lm_head.weight"] = (v, d)
    return out


def generate(folder: Path, sizes: dict[str, int]) -> Path:
    """The model script and the sharded bf16 checkpoint in ``folder`` (kept when already there)."""
    folder.mkdir(parents=True, exist_ok=True)
    index = folder / "model.safetensors.index.json"
    script = folder / "decoder.py"
    script.write_text(SCRIPT.replace("{sizes}", json.dumps(sizes).replace('"', '\\"')))
    if index.is_file() and json.loads(index.read_text()).get("metadata", {}).get("sizes") == sizes:
        return index
    g = torch.Generator().manual_seed(0)
    all_shapes = shapes(sizes)
    groups: list[list[str]] = [[]]
    held = 0
    for name, shape in all_shapes.items():
        n = 2 * int(torch.tensor(shape).prod()) if shape else 2
        if groups[-1] and held + n > SHARD_BYTES:
            groups.append([])
            held = 0
        groups[-1].append(name)
        held += n
    weight_map = {}
    t0 = time.perf_counter()
    for i, names in enumerate(groups, 1):
        shard = f"model-{i:05d}-of-{len(groups):05d}.safetensors"
        tensors = {}
        for name in names:
            shape = all_shapes[name]
            if name.endswith("norm.weight"):
                tensors[name] = torch.ones(shape, dtype=torch.bfloat16)
            else:
                tensors[name] = (torch.randn(shape, generator=g) * 0.02).to(torch.bfloat16)
            weight_map[name] = shard
        save_file(tensors, folder / shard)
        del tensors
        print(f"  wrote {shard} ({time.perf_counter() - t0:.0f} s)", flush=True)
    total = sum(2 * int(torch.tensor(s).prod()) for s in all_shapes.values())
    index.write_text(json.dumps({"metadata": {"total_size": total, "sizes": sizes}, "weight_map": weight_map}))
    return index


def calibration(folder: Path, sizes: dict[str, int], samples: int = 5, tokens: int = 32) -> Path:
    """A calibration folder of ``samples`` token-id files (``[1, tokens]``), made once."""
    calib = folder / "calib"
    if not calib.is_dir():
        calib.mkdir()
        g = torch.Generator().manual_seed(0)
        for i in range(samples):
            ids = torch.randint(0, sizes["vocab"], (1, tokens), generator=g)
            save_file({"input_ids": ids}, str(calib / f"sample{i}.safetensors"))
    return calib


def run_cli(folder: Path, index: Path, out: Path, flags: list[str], sizes: dict[str, int]) -> dict[str, float]:
    """``mono-quant quantize`` in a fresh process: its peak RSS, baseline and wall time."""
    args = ["quantize", "--script", str(folder / "decoder.py"), "--checkpoint", str(index), *flags]
    args += ["--out", str(out)]
    env = {**os.environ, "BENCH_LARGE_SIZES": json.dumps(sizes)}
    bench = str(Path(__file__).resolve().parent)
    t0 = time.perf_counter()
    run = subprocess.run(
        [sys.executable, "-c", DRIVER.format(bench=bench), *args], capture_output=True, text=True, env=env
    )
    wall = time.perf_counter() - t0
    if run.returncode != 0:
        raise SystemExit(f"mono-quant quantize failed ({run.returncode}):\n{run.stderr[-4000:]}")
    peak, base, command_s = (float(v) for v in run.stdout.split("RESULT")[-1].split()[:3])
    print(run.stdout.split("RESULT")[0].strip().splitlines()[-1] if run.stdout.strip() else "", flush=True)
    return {"peak": peak, "base": base, "command_s": command_s, "wall_s": wall}


def same_as_in_memory(index: Path, out: Path, names: list[str], config) -> bool:
    """Whether the file's tensors of ``names`` (Linear layers) equal those of the same float
    weights quantized in memory on their own."""
    from torch import nn

    from mono_quant_core import quantize

    weight_map = json.loads(index.read_text())["weight_map"]
    ok = True
    with safe_open(str(out), "pt") as quantized:
        for name in names:
            with safe_open(str(index.parent / weight_map[f"{name}.weight"]), "pt") as f:
                weight = f.get_tensor(f"{name}.weight")
            layer = nn.Linear(weight.shape[1], weight.shape[0], bias=False, dtype=torch.bfloat16, device="meta")
            layer.weight = nn.Parameter(weight)
            state = quantize(layer, config, validate=False).model.state_dict()
            for key, t in state.items():
                same = torch.equal(quantized.get_tensor(f"{name}.{key}"), t)
                ok &= same
                if not same:
                    print(f"  MISMATCH {name}.{key}")
    return ok


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "mono-quant" / "bench-large")
    parser.add_argument("--blocks", type=int, default=32)
    parser.add_argument("--hidden", type=int, default=4096)
    parser.add_argument("--mlp", type=int, default=11008)
    parser.add_argument("--heads", type=int, default=32)
    parser.add_argument("--vocab", type=int, default=32000)
    parser.add_argument("--only", choices=["int4", "int8", "int8-static"], help="run one of the cases")
    args = parser.parse_args()
    from mono_quant_core import QuantConfig

    sizes = {k: getattr(args, k) for k in ("blocks", "hidden", "mlp", "heads", "vocab")}
    folder = args.cache / "_".join(f"{k}{v}" for k, v in sizes.items())
    print(f"checkpoint in {folder}", flush=True)
    index = generate(folder, sizes)
    ckpt_bytes = json.loads(index.read_text())["metadata"]["total_size"]
    print(f"float checkpoint: {ckpt_bytes / 1e9:.2f} GB bf16", flush=True)
    cases = {
        "int4": (
            ["--dtype", "int4", "--mode", "weight-only", "--granularity", "per-group", "--group-size", "128"],
            QuantConfig(dtype="int4", mode="weight-only", granularity="per-group", group_size=128),
        ),
        "int8": (["--dtype", "int8", "--mode", "weight-only"], QuantConfig(dtype="int8", mode="weight-only")),
        # Block by block (sequential.py): each block read once for all calibration samples.
        "int8-static": (["--dtype", "int8", "--mode", "static", "--calib", str(calibration(folder, sizes))], None),
    }
    last = sizes["blocks"] - 1
    checked = ["layers.0.self_attn.q_proj", f"layers.{last}.mlp.down_proj", "lm_head"]
    rows = []
    for name, (flags, config) in cases.items():
        if args.only and name != args.only:
            continue
        out = folder / f"out.{name}.safetensors"
        measured = run_cli(folder, index, out, flags, sizes)
        same = same_as_in_memory(index, out, checked, config) if config is not None else None
        rows.append((name, measured, out.stat().st_size, same))
        out.unlink()
    print()
    print(
        "| case | wall time | peak RSS | peak / checkpoint | peak over baseline | output file "
        "| layers equal to in-memory |"
    )
    print("|---|---|---|---|---|---|---|")
    for name, m, size, same in rows:
        case = name if "static" in name else f"{name} weight-only"
        print(
            f"| {case} | {m['command_s']:.0f} s | {m['peak'] / 1e9:.2f} GB "
            f"| {m['peak'] / ckpt_bytes:.3f}x | {(m['peak'] - m['base']) / 1e9:.2f} GB | {size / 1e9:.2f} GB "
            f"| {'n/a (tests)' if same is None else 'yes' if same else 'NO'} |"
        )


if __name__ == "__main__":
    main()
