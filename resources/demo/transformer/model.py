"""The mono-quant demo transformer: a tiny nn.TransformerEncoder classifier over token ids.

Input: ``tokens``, an int64 batch of shape (N, 12) with ids in [1, 32); output: (N, 4) logits
for which token group (id % 4) occurs most often.  Weights: model.safetensors beside
this file (made by ../generate.py); calibration files pass ``tokens`` as a keyword.
``evaluate(model)`` is the task metric: top-1 accuracy on 1000 fresh sequences.
"""

from __future__ import annotations

import torch
from torch import nn

VOCAB, SEQ_LEN, CLASSES = 32, 12, 4
EVAL_SEQUENCES, EVAL_SEED, EVAL_BATCH = 1000, 2024, 250


class TinyTransformer(nn.Module):
    def __init__(self, d_model: int = 32, heads: int = 2, layers: int = 2) -> None:
        super().__init__()
        self.embed = nn.Embedding(VOCAB, d_model)
        self.position = nn.Embedding(SEQ_LEN, d_model)
        # batch_first=False keeps PyTorch's fused inference path off: that path reads
        # linear1.weight / linear2.weight directly instead of calling the layers.
        layer = nn.TransformerEncoderLayer(d_model, heads, dim_feedforward=64, dropout=0.0)
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, CLASSES)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(tokens.shape[1], device=tokens.device)
        x = self.embed(tokens) + self.position(positions)
        x = self.encoder(x.transpose(0, 1)).transpose(0, 1)
        return self.head(self.norm(x.mean(dim=1)))


def build_model() -> TinyTransformer:
    return TinyTransformer()


def most_frequent_group(tokens: torch.Tensor) -> torch.Tensor:
    """The class of each sequence: the group (id % CLASSES) that occurs most often in it."""
    counts = torch.stack([(tokens % CLASSES == c).sum(1) for c in range(CLASSES)], 1)
    # Ties go to the lowest group; a small bias keeps them deterministic.
    return (counts * 16 - torch.arange(CLASSES)).argmax(1)


def evaluate(model: nn.Module) -> float:
    """Top-1 accuracy on a fixed set of sequences (seeded, so every call scores the same ones)."""
    generator = torch.Generator().manual_seed(EVAL_SEED)
    tokens = torch.randint(1, VOCAB, (EVAL_SEQUENCES, SEQ_LEN), generator=generator)
    labels = most_frequent_group(tokens)
    correct = 0
    for start in range(0, EVAL_SEQUENCES, EVAL_BATCH):
        logits = model(tokens=tokens[start : start + EVAL_BATCH])
        correct += int((logits.argmax(1) == labels[start : start + EVAL_BATCH]).sum())
    return correct / EVAL_SEQUENCES
