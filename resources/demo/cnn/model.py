"""The mono-quant demo CNN: classifies 8x8 handwritten digits (scikit-learn's digits data set).

Input: a float32 batch of shape (N, 1, 8, 8) scaled to [0, 1]; output: (N, 10) logits.
Weights: model.safetensors beside this file (made by ../generate.py).  ``evaluate(model)`` is
the task metric: top-1 accuracy on the held-out digits in heldout.safetensors.
"""

from __future__ import annotations

from pathlib import Path

from safetensors.torch import load_file
from torch import nn

HELDOUT = Path(__file__).resolve().with_name("heldout.safetensors")
EVAL_BATCH = 128


class DigitsCNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(16, 32, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(32, 32, 3, padding=1),
            nn.ReLU(),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(32 * 4 * 4, 64),
            nn.ReLU(),
            nn.Dropout(0.1),
            nn.Linear(64, 10),
        )

    def forward(self, x):
        return self.classifier(self.features(x))


def build_model() -> DigitsCNN:
    return DigitsCNN()


def evaluate(model: nn.Module) -> float:
    """Top-1 accuracy on the held-out digits (never trained on; read when called, not at import)."""
    data = load_file(HELDOUT)
    images, labels = data["images"], data["labels"]
    correct = 0
    for start in range(0, len(labels), EVAL_BATCH):
        logits = model(images[start : start + EVAL_BATCH])
        correct += int((logits.argmax(1) == labels[start : start + EVAL_BATCH]).sum())
    return correct / len(labels)
