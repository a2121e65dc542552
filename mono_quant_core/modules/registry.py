"""Which quantized class replaces which float module type."""

from __future__ import annotations

from torch import nn

from .attention import QuantizedMultiheadAttention, QuantizedNonDynamicallyQuantizableLinear
from .base import QuantizedModule
from .conv import (
    QuantizedConv1d,
    QuantizedConv2d,
    QuantizedConv3d,
    QuantizedConvTranspose1d,
    QuantizedConvTranspose2d,
)
from .embedding import QuantizedEmbedding
from .linear import QuantizedLinear
from .rnn import QuantizedGRU, QuantizedLSTM

#: Replacement classes by float type name ("Linear", "Conv2d", ...).
REPLACEMENTS: dict[str, type[QuantizedModule]] = {
    cls.float_type.__name__: cls
    for cls in (
        QuantizedLinear,
        QuantizedConv1d,
        QuantizedConv2d,
        QuantizedConv3d,
        QuantizedEmbedding,
        QuantizedLSTM,
        QuantizedGRU,
        QuantizedMultiheadAttention,
        QuantizedNonDynamicallyQuantizableLinear,
        QuantizedConvTranspose1d,
        QuantizedConvTranspose2d,
    )
}


def replacement_for(module: nn.Module) -> type[QuantizedModule] | None:
    """The replacement class for ``module``'s exact type, or None.

    Subclasses are not replaced: they may change ``forward`` or read the weight.  torch's own
    ``NonDynamicallyQuantizableLinear`` (a Linear in all but name) has a replacement of its own.
    """
    cls = REPLACEMENTS.get(type(module).__name__)
    if cls is None or type(module) is not cls.float_type:
        return None
    return cls
