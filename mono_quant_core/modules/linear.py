"""QuantizedLinear: nn.Linear with int8 / int4 / fp16 / bf16 weights, computed by a selected kernel.

A layer smoothed by SmoothQuant (mono_quant_core.algorithms.smoothquant) holds ``W·diag(s)`` and
one more float32 [in_features] buffer: ``input_smoothing`` (``s``, which its forward divides the
input by before quantizing it) when the factors are stored in the layer, or ``smoothing_factors``
(the same ``s``, a record only: its forward does not use it) when ``1/s`` was folded into the
module before it.  ``quant_meta()["smoothquant"]`` says which, so that loading creates the buffer.
"""

from __future__ import annotations

from typing import Any, cast

import torch
from torch import nn

from ..config import QuantConfig
from ..errors import ConfigError, QuantizedFileError
from ..kernels import LinearKernel, fallback_for, select_linear_kernel
from .base import QuantizedModule

#: ``quant_meta()["smoothquant"]["factors"]``: stored in the layer, or folded into a named module.
STORED = "stored"
FOLDED = "folded into "


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
        #: ``{"alpha": alpha, "factors": "stored" | "folded into <producer>"}`` when smoothed, else None.
        self.smoothquant: dict[str, Any] | None = None

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
        smoothing = meta.get("smoothquant")
        if smoothing is not None:
            if not isinstance(smoothing, dict) or "alpha" not in smoothing or "factors" not in smoothing:
                raise QuantizedFileError(f"layer record smoothquant: {smoothing!r} is not a SmoothQuant record")
            factors = str(smoothing["factors"])
            folded = factors[len(FOLDED) :] if factors.startswith(FOLDED) else None
            empty = torch.ones(linear.in_features, dtype=torch.float32, device=q.weight.device)
            q.set_smoothing(float(smoothing["alpha"]), empty, folded)
        return q

    def set_smoothing(self, alpha: float, factors: torch.Tensor, folded_into: str | None = None) -> None:
        """SmoothQuant factors ``s`` of this layer, whose weight is already ``W·diag(s)``: stored
        (``input_smoothing``: the forward divides its input by ``s``) or, when ``folded_into``
        names the module before that took ``1/s``, only recorded (``smoothing_factors``)."""
        if tuple(factors.shape) != (self.in_features,):
            raise ConfigError(f"smoothquant: {tuple(factors.shape)} factors for {self.in_features} input features")
        s = factors.detach().to(torch.float32, copy=True).contiguous()
        self.register_buffer("smoothing_factors" if folded_into else "input_smoothing", s)
        self.smoothquant = {"alpha": float(alpha), "factors": f"{FOLDED}{folded_into}" if folded_into else STORED}
        self._kernel_key = None

    def quant_meta(self) -> dict[str, Any]:
        meta = super().quant_meta()
        if self.smoothquant is not None:
            meta["smoothquant"] = dict(self.smoothquant)
        return meta

    def _fixed_dtype_names(self) -> set[str]:
        return super()._fixed_dtype_names() | {"input_smoothing", "smoothing_factors"}

    def to_float(self) -> nn.Linear:
        """A plain float32 ``nn.Linear`` with the dequantized weight."""
        weight = self.dequantized_weight()
        smoothing = self._buffers.get("input_smoothing")
        if smoothing is not None:  # the stored factors go back into the weight: x Wᵀ again
            weight = weight / smoothing.to(weight.device)
        m = nn.Linear(self.in_features, self.out_features, bias=self.bias is not None, device="meta")
        m.weight = nn.Parameter(weight)
        if self.bias is not None:
            m.bias = nn.Parameter(self.bias.detach().to(torch.float32))
        return m

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        smoothing = self._buffers.get("input_smoothing")
        if smoothing is not None:
            x = x / smoothing.to(x.dtype)
        return self.forward_smoothed(x)

    def forward_smoothed(self, x: torch.Tensor) -> torch.Tensor:
        """The forward on an input already divided by the stored SmoothQuant factors (what the
        weight ``W·diag(s)`` multiplies; the plain forward for a layer without stored factors)."""
        kernel: LinearKernel
        kernel, state = self._cached(lambda: select_linear_kernel(self))
        try:
            y = self._run(kernel, state, x)
            if kernel.holds_codes:
                self._drop_codes("weight")  # the pack holds them: one copy of the int8 bytes
            return y
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
