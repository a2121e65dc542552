"""QuantizedLSTM / QuantizedGRU: recurrent layers with quantized (or cast) weight matrices.

Every ``weight_*`` matrix of every layer and direction is quantized per row
(the gate rows); biases stay float.  A call dequantizes the weights and runs
torch's own recurrent forward (PackedSequence, unbatched input, ``hx``,
``proj_size`` all behave as in ``nn.LSTM`` / ``nn.GRU``).  Dynamic and static
modes round the input sequence to the int8 grid (the recurrent state stays
float: a per-step quantization would need a hand-written cell loop).
"""

from __future__ import annotations

from typing import Any, ClassVar, cast

import torch
from torch import nn
from torch.nn.utils.rnn import PackedSequence

from ..config import QuantConfig
from .base import QuantizedModule

_HYPER = ("input_size", "hidden_size", "num_layers", "bias", "batch_first", "dropout", "bidirectional", "proj_size")


def _device(module: nn.RNNBase) -> torch.device:
    """The device of the first weight (``weight_ih_l0``, which every recurrent layer has)."""
    first = module._flat_weights[0]
    assert first is not None  # only biases can be absent
    return first.device


class QuantizedRNNBase(QuantizedModule):
    """Shared code of the LSTM and GRU replacements."""

    float_type: ClassVar[type[nn.RNNBase]]
    # Copied from the float module (_HYPER; ``bias`` is the flag, the biases are in param_names).
    input_size: int
    hidden_size: int
    num_layers: int
    bias: bool
    batch_first: bool
    dropout: float
    bidirectional: bool
    proj_size: int

    def __init__(self, float_module: nn.RNNBase, **settings: Any) -> None:
        super().__init__(**settings)
        for name in _HYPER:
            setattr(self, name, getattr(float_module, name))
        self.param_names = list(float_module._flat_weights_names)

    @classmethod
    def from_float(cls, module: nn.Module, config: QuantConfig) -> QuantizedRNNBase:
        """The quantized replacement of ``module`` (an LSTM or GRU, which is never modified)."""
        rnn = cast(nn.RNNBase, module)  # the registry replaces exactly nn.LSTM / nn.GRU with these classes
        q = cls(rnn, **cls._settings(config))
        for name in q.param_names:
            t = getattr(module, name)
            if name.startswith("weight_"):
                q._store_weight(name, t)
            else:
                q._store_float(name, t)
        q._init_input_qparams(_device(rnn))
        return q

    @classmethod
    def from_meta(cls, meta: dict[str, Any], float_module: nn.Module) -> QuantizedRNNBase:
        """An empty replacement of ``float_module`` (an LSTM or GRU) shaped by ``meta``, for ``load_state_dict``."""
        rnn = cast(nn.RNNBase, float_module)  # the registry replaces exactly nn.LSTM / nn.GRU with these classes
        q = cls(rnn, **cls._settings_from_meta(meta))
        for name in q.param_names:
            t = getattr(rnn, name)
            if name.startswith("weight_"):
                q._check_shape(name, tuple(t.shape), meta)
                q._empty_weight(name, tuple(t.shape), t.device)
            else:
                q._empty_float(name, t)
        q._init_input_qparams(_device(rnn))
        return q

    def _float_module(self, dtype: torch.dtype, requires_grad: bool) -> nn.RNNBase:
        kwargs = {name: getattr(self, name) for name in _HYPER if name != "proj_size"}
        if self.proj_size:
            kwargs["proj_size"] = self.proj_size
        m = self.float_type(**kwargs, device="meta")
        for name in self.param_names:
            t = self.dequantized_weight(name, dtype) if name in self.weight_shapes else self.float_tensor(name, dtype)
            assert t is not None  # param_names lists only the tensors the float module has
            # RNNBase.__setattr__ keeps its flat weight list in step.
            setattr(m, name, nn.Parameter(t, requires_grad=requires_grad))
        return m.train(self.training)

    def to_float(self) -> nn.RNNBase:
        """A plain float32 LSTM / GRU with the dequantized weights."""
        return self._float_module(torch.float32, True)

    def forward(
        self, input: torch.Tensor | PackedSequence, hx: torch.Tensor | tuple[torch.Tensor, torch.Tensor] | None = None
    ) -> tuple[torch.Tensor | PackedSequence, Any]:
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
