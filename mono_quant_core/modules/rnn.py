"""QuantizedLSTM / QuantizedGRU: recurrent layers with quantized (or cast) weight matrices.

Every ``weight_*`` matrix of every layer and direction is quantized per row
(the gate rows); biases stay float.  A call dequantizes the weights and runs
torch's own recurrent forward (PackedSequence, unbatched input, ``hx``,
``proj_size`` all behave as in ``nn.LSTM`` / ``nn.GRU``).  Dynamic and static
modes round the input sequence to the int8 grid (the recurrent state stays
float: a per-step quantization would need a hand-written cell loop).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.nn.utils.rnn import PackedSequence

from ..config import QuantConfig
from .base import QuantizedModule

_HYPER = ("input_size", "hidden_size", "num_layers", "bias", "batch_first", "dropout", "bidirectional", "proj_size")


class QuantizedRNNBase(QuantizedModule):
    """Shared code of the LSTM and GRU replacements."""

    def __init__(self, float_module: nn.RNNBase, **settings: Any) -> None:
        super().__init__(**settings)
        for name in _HYPER:
            setattr(self, name, getattr(float_module, name))
        self.param_names = list(float_module._flat_weights_names)

    @classmethod
    def from_float(cls, module: nn.RNNBase, config: QuantConfig) -> QuantizedRNNBase:
        """The quantized replacement of ``module`` (which is never modified)."""
        q = cls(module, **cls._settings(config))
        for name in q.param_names:
            t = getattr(module, name)
            if name.startswith("weight_"):
                q._store_weight(name, t)
            else:
                q._store_float(name, t)
        q._init_input_qparams(module._flat_weights[0].device)
        return q

    @classmethod
    def from_meta(cls, meta: dict[str, Any], float_module: nn.RNNBase) -> QuantizedRNNBase:
        """An empty replacement shaped by ``meta``, ready for ``load_state_dict``."""
        q = cls(float_module, **cls._settings_from_meta(meta))
        for name in q.param_names:
            t = getattr(float_module, name)
            if name.startswith("weight_"):
                q._check_shape(name, tuple(t.shape), meta)
                q._empty_weight(name, tuple(t.shape), t.device)
            else:
                q._empty_float(name, t)
        q._init_input_qparams(float_module._flat_weights[0].device)
        return q

    def _float_module(self, dtype: torch.dtype, requires_grad: bool) -> nn.RNNBase:
        kwargs = {name: getattr(self, name) for name in _HYPER if name != "proj_size"}
        if self.proj_size:
            kwargs["proj_size"] = self.proj_size
        m = self.float_type(**kwargs, device="meta")
        for name in self.param_names:
            t = self.dequantized_weight(name, dtype) if name in self.weight_shapes else self.float_tensor(name, dtype)
            # RNNBase.__setattr__ keeps its flat weight list in step.
            setattr(m, name, nn.Parameter(t, requires_grad=requires_grad))
        return m.train(self.training)

    def to_float(self) -> nn.RNNBase:
        """A plain float32 LSTM / GRU with the dequantized weights."""
        return self._float_module(torch.float32, True)

    def forward(self, input, hx=None):
        self.kernel = "dequantize" if self.spec is not None else "upcast"
        data = input.data if isinstance(input, PackedSequence) else input
        data = self.quantize_input(data)
        input = input._replace(data=data) if isinstance(input, PackedSequence) else data
        return self._float_module(data.dtype, False)(input, hx)

    def extra_repr(self) -> str:
        return f"{self.input_size}, {self.hidden_size}, num_layers={self.num_layers}, {super().extra_repr()}"


class QuantizedLSTM(QuantizedRNNBase):
    float_type = nn.LSTM


class QuantizedGRU(QuantizedRNNBase):
    float_type = nn.GRU
