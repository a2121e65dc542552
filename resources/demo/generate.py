"""Make the demo's checkpoints and calibration folders (run once; the outputs are committed).

    python resources/demo/generate.py

cnn/: DigitsCNN trained a few epochs on scikit-learn's 8x8 digits; calibration
files are held-out images, one (12, 1, 8, 8) float32 batch per .pt file, and
heldout.safetensors holds all the held-out images and labels for evaluate().
transformer/: TinyTransformer trained on a synthetic "most frequent token group"
task; calibration files are .safetensors holding {"tokens": (8, 12) int64}, so
they reach forward as the keyword argument ``tokens``.
"""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import nn

HERE = Path(__file__).resolve().parent
CALIBRATION_FILES = 40


def _load(folder: str):
    spec = importlib.util.spec_from_file_location(f"demo_{folder}", HERE / folder / "model.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _train(model: nn.Module, x, y, epochs: int, batch: int, lr: float, key: str | None = None) -> None:
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(x))
        for i in range(0, len(x), batch):
            idx = order[i : i + batch]
            out = model(**{key: x[idx]}) if key else model(x[idx])
            loss = nn.functional.cross_entropy(out, y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.eval()


def _accuracy(model: nn.Module, x, y, key: str | None = None) -> float:
    with torch.no_grad():
        out = model(**{key: x}) if key else model(x)
    return float((out.argmax(1) == y).float().mean())


def _fresh(folder: Path) -> Path:
    calib = folder / "calibration"
    shutil.rmtree(calib, ignore_errors=True)
    calib.mkdir(parents=True)
    return calib


def _digits_split() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The digits as (N, 1, 8, 8) images in [0, 1] and labels, and the training and held-out indices.

    Seeds torch's generator first: make_cnn trains on from where this leaves it.
    """
    from sklearn.datasets import load_digits

    torch.manual_seed(0)
    digits = load_digits()
    x = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0
    y = torch.tensor(digits.target, dtype=torch.long)
    order = torch.randperm(len(x))
    return x, y, order[:1300], order[1300:]


def make_cnn_heldout() -> None:
    """cnn/heldout.safetensors: the held-out digits and labels that the demo's evaluate() scores."""
    x, y, _, held = _digits_split()
    first = torch.load(HERE / "cnn" / "calibration" / "digits_0.pt")
    assert torch.equal(x[held[:12]], first), "the held-out split differs from the committed calibration files"
    save_file({"images": x[held].contiguous(), "labels": y[held].contiguous()}, HERE / "cnn" / "heldout.safetensors")


def make_cnn() -> None:
    x, y, train, held = _digits_split()
    model = _load("cnn").build_model()
    _train(model, x[train], y[train], epochs=12, batch=32, lr=2e-3)
    print(f"cnn: held-out accuracy {_accuracy(model, x[held], y[held]):.3f}")
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, HERE / "cnn" / "model.safetensors")
    calib = _fresh(HERE / "cnn")
    for i in range(CALIBRATION_FILES):
        torch.save(x[held[i * 12 : (i + 1) * 12]].clone(), calib / f"digits_{i}.pt")
    make_cnn_heldout()


def _token_task(n: int, module) -> tuple[torch.Tensor, torch.Tensor]:
    tokens = torch.randint(1, module.VOCAB, (n, module.SEQ_LEN))
    return tokens, module.most_frequent_group(tokens)


def make_transformer() -> None:
    torch.manual_seed(1)
    module = _load("transformer")
    x, y = _token_task(6000, module)
    xh, yh = _token_task(1000, module)
    model = module.build_model()
    _train(model, x, y, epochs=8, batch=64, lr=3e-3, key="tokens")
    print(f"transformer: held-out accuracy {_accuracy(model, xh, yh, key='tokens'):.3f}")
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, HERE / "transformer" / "model.safetensors")
    calib = _fresh(HERE / "transformer")
    for i in range(CALIBRATION_FILES):
        save_file({"tokens": xh[i * 8 : (i + 1) * 8].contiguous()}, calib / f"tokens_{i}.safetensors")


if __name__ == "__main__":
    torch.set_num_threads(1)
    make_cnn()
    make_transformer()
