"""QuantSpec: how one tensor is quantized (integer type, scheme, granularity), and its integer range."""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import ConfigError

INT_DTYPES = ("int8", "int4")
GRANULARITIES = ("per-tensor", "per-channel", "per-group")

# Symmetric ranges drop the most negative code: the grid is centred on 0, the
# zero point is exactly 0 and negation is exact (-(-128) does not fit int8).
# fbgemm's u8 x s8 kernels add pairs of products in int16 with saturation; with
# the 7-bit activations of reduce_range=True the worst pair is 2*127*127 =
# 32258 <= 32767 (2*127*128 = 32512 without the -128 exclusion; docs/quantization-math.md).
_RANGES = {
    ("int8", True): (-127, 127),
    ("int8", False): (-128, 127),
    ("int4", True): (-7, 7),
    ("int4", False): (0, 15),
}

#: int4 codes are stored unsigned: symmetric values are offset by this much.
INT4_SYMMETRIC_OFFSET = 8


def qrange(dtype: str, symmetric: bool) -> tuple[int, int]:
    """The integer range ``(qmin, qmax)`` of ``dtype`` ('int8' | 'int4') under a scheme."""
    try:
        return _RANGES[(dtype, bool(symmetric))]
    except KeyError:
        raise ConfigError(f"dtype: {dtype!r} is not an integer type; choose int8 or int4") from None


@dataclass(frozen=True)
class QuantSpec:
    """Integer type, scheme and granularity of one quantized tensor.

    ``axis``: the channel axis for per-channel.  ``group_size``: elements per
    group along dim 1 of the tensor flattened to ``[shape[0], -1]`` (per-group).
    """

    dtype: str = "int8"
    symmetric: bool = True
    granularity: str = "per-channel"
    axis: int = 0
    group_size: int = 128

    def __post_init__(self) -> None:
        qrange(self.dtype, self.symmetric)
        if self.granularity not in GRANULARITIES:
            raise ConfigError(
                f"granularity: {self.granularity!r} is not allowed; choose one of {', '.join(GRANULARITIES)}"
            )
        if self.granularity == "per-group" and (int(self.group_size) < 1):
            raise ConfigError(f"group_size: {self.group_size!r} must be a positive integer")

    @property
    def qmin(self) -> int:
        return qrange(self.dtype, self.symmetric)[0]

    @property
    def qmax(self) -> int:
        return qrange(self.dtype, self.symmetric)[1]

    @property
    def scheme(self) -> str:
        return "symmetric" if self.symmetric else "asymmetric"
