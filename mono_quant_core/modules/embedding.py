"""QuantizedEmbedding: an embedding table with quantized (or cast) rows.

Lookups gather the stored rows (packed int4 rows stay packed) with their
scales and dequantize only those.  There is no floating-point activation to
quantize, so the mode is always weight-only.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Self, cast

import torch
from torch import nn

from ..config import QuantConfig
from ..tensor import dequantize_weight
from .base import QuantizedModule

_HYPER = ("num_embeddings", "embedding_dim", "padding_idx", "max_norm", "norm_type", "scale_grad_by_freq", "sparse")


class QuantizedEmbedding(QuantizedModule):
    """Replacement of ``nn.Embedding``; outputs are in ``output_dtype`` (the float table's dtype)."""

    float_type = nn.Embedding
    # Copied from the float module (_HYPER), and the buffers (declared for type checkers).
    num_embeddings: int
    embedding_dim: int
    padding_idx: int | None
    max_norm: float | None
    norm_type: float
    scale_grad_by_freq: bool
    sparse: bool
    weight: torch.Tensor
    weight_scale: torch.Tensor

    def __init__(self, float_module: nn.Embedding, **settings: Any) -> None:
        settings["mode"] = "weight-only"
        super().__init__(**settings)
        for name in _HYPER:
            setattr(self, name, getattr(float_module, name))
        self.output_dtype = float_module.weight.dtype

    @classmethod
    def from_float(cls, module: nn.Module, config: QuantConfig) -> QuantizedEmbedding:
        """The quantized replacement of ``module`` (an ``nn.Embedding``, which is never modified)."""
        embedding = cast(nn.Embedding, module)  # the registry replaces exactly nn.Embedding with this class
        q = cls(embedding, **cls._settings(config))
        q._store_weight("weight", embedding.weight)
        return q

    @classmethod
    def from_meta(cls, meta: dict[str, Any], float_module: nn.Module) -> QuantizedEmbedding:
        """An empty replacement of ``float_module`` (an ``nn.Embedding``) shaped by ``meta``.

        Ready for ``load_state_dict``.
        """
        embedding = cast(nn.Embedding, float_module)  # the registry replaces exactly nn.Embedding with this class
        q = cls(embedding, **cls._settings_from_meta(meta))
        shape = tuple(embedding.weight.shape)
        q._check_shape("weight", shape, meta)
        q._empty_weight("weight", shape, embedding.weight.device)
        return q

    def to_float(self) -> nn.Embedding:
        """A plain float32 ``nn.Embedding`` with the dequantized table."""
        return nn.Embedding(
            self.num_embeddings,
            self.embedding_dim,
            padding_idx=self.padding_idx,
            max_norm=self.max_norm,
            norm_type=self.norm_type,
            scale_grad_by_freq=self.scale_grad_by_freq,
            sparse=self.sparse,
            _weight=self.dequantized_weight(),
        )

    def _apply(self, fn: Callable[[torch.Tensor], torch.Tensor], recurse: bool = True) -> Self:
        super()._apply(fn, recurse)
        # Follow float dtype moves (.half(), .double()) in the output, as nn.Embedding would.
        probe = fn(torch.empty(0, dtype=self.output_dtype))
        if probe.is_floating_point():
            self.output_dtype = probe.dtype
        return self

    def forward(self, indices: torch.Tensor) -> torch.Tensor:
        self.kernel = "gather-dequantize" if self.spec is not None else "gather-upcast"
        flat = indices.reshape(-1)
        rows = self.weight.index_select(0, flat)
        if self.spec is None:
            out = rows.to(self.output_dtype)
        else:
            scale, zp = self.weight_scale, getattr(self, "weight_zero_point", None)
            if self.spec.granularity != "per-tensor":  # one scale row per table row
                scale = scale.index_select(0, flat)
                zp = None if zp is None else zp.index_select(0, flat)
            out = dequantize_weight(rows, scale, zp, self.spec, (flat.numel(), self.embedding_dim))
            out = out.to(self.output_dtype)
        if self.max_norm is not None:
            # nn.Embedding renormalises the table in place; the stored table is
            # integer, so the looked-up rows are renormalised instead (same values).
            norms = torch.linalg.vector_norm(out, ord=self.norm_type, dim=-1, keepdim=True)
            out = out * torch.where(norms > self.max_norm, self.max_norm / (norms + 1e-7), 1.0).to(out.dtype)
        return out.reshape(*indices.shape, self.embedding_dim)

    def extra_repr(self) -> str:
        return f"{self.num_embeddings}, {self.embedding_dim}, {super().extra_repr()}"
