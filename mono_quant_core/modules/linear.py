"""QuantizedLinear: nn.Linear with int8 / int4 / fp16 / bf16 weights, computed by a selected kernel."""

from __future__ import annotations

from typing import Any, cast

import torch
from torch import nn

from ..config import QuantConfig
from ..kernels import LinearKernel, fallback_for, select_linear_kernel
from .base import QuantizedModule


class QuantizedLinear(QuantizedModule):
    """Replacement of ``nn.Linear``; ``kernel`` names the compute path chosen at first forward."""

    float_type = nn.Linear
    # Registered in _take_weight_and_bias / _empty_weight_and_bias (declared for type checkers).
    weight: torch.Tensor
    bias: nn.Parameter | None

    def __init__(self, in_features: int, out_features: int, **settings: Any) -> None:
        super().__init__(**settings)
        self.in_features = in_features
        self.out_features = out_features

    @classmethod
    def from_float(cls, module: nn.Module, config: QuantConfig) -> QuantizedLinear:
        """The quantized replacement of ``module`` (an ``nn.Linear``, which is never modified)."""
        linear = cast(nn.Linear, module)  # the registry replaces exactly nn.Linear with this class
        q = cls(linear.in_features, linear.out_features, **cls._settings(config))
        q._take_weight_and_bias(linear)
        return q

    @classmethod
    def from_meta(cls, meta: dict[str, Any], float_module: nn.Module) -> QuantizedLinear:
        """An empty replacement of ``float_module`` (an ``nn.Linear``) shaped by ``meta``, for ``load_state_dict``."""
        linear = cast(nn.Linear, float_module)  # the registry replaces exactly nn.Linear with this class
        q = cls(linear.in_features, linear.out_features, **cls._settings_from_meta(meta))
        q._empty_weight_and_bias(meta, linear)
        return q

    def to_float(self) -> nn.Linear:
        """A plain float32 ``nn.Linear`` with the dequantized weight."""
        weight = self.dequantized_weight()
        m = nn.Linear(self.in_features, self.out_features, bias=self.bias is not None, device="meta")
        m.weight = nn.Parameter(weight)
        if self.bias is not None:
            m.bias = nn.Parameter(self.bias.detach().to(torch.float32))
        return m

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        kernel: LinearKernel
        kernel, state = self._cached(lambda: select_linear_kernel(self))
        try:
            return self._run(kernel, state, x)
        except RuntimeError:
            fallback = fallback_for(self)
            if kernel is fallback or x.shape[-1] != self.in_features:
                raise
            # The fast op refused this input: use the fallback from now on.
            state = fallback.pack(self)
            self._kernel_state = (fallback, state)
            self.kernel = fallback.name
            return self._run(fallback, state, x)

    def _run(self, kernel: LinearKernel, state: Any, x: torch.Tensor) -> torch.Tensor:
        needs_backward = x.requires_grad and torch.is_grad_enabled() and not kernel.differentiable
        if (x.numel() == 0 or needs_backward) and kernel is not fallback_for(self):
            # An empty batch, or an input autograd must differentiate through: the
            # fallback serves it this once (the packed ops have no backward).
            kernel = fallback_for(self)
            state = kernel.pack(self)
        if not kernel.quantizes_input:
            x = self.quantize_input(x)
        lead = x.shape[:-1]
        y = kernel.run(state, x.reshape(-1, x.shape[-1]))
        return y.reshape(*lead, self.out_features)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, {super().extra_repr()}"
