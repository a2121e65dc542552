"""The mono-quant demo CNN: classifies 8x8 handwritten digits (scikit-learn's digits data set).

Input: a float32 batch of shape (N, 1, 8, 8) scaled to [0, 1]; output: (N, 10) logits.
Weights: model.safetensors beside this file (made by ../generate.py).
"""

from __future__ import annotations

from torch import nn


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
