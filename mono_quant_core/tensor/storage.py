"""Weights as stored: int8 codes, or int4 codes packed two per uint8 byte row by row.

int4 codes are packed along dim 1 of the weight flattened to ``[shape[0], fan_in]``
(each row padded to an even count), so a row of an embedding table or a
Linear weight is a contiguous run of bytes.  Symmetric int4 codes [-7, 7] are
stored offset by +8 (as 1..15); asymmetric codes [0, 15] as they are.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, overload

import torch

from .affine import dequantize, dequantize_, float_codes, quantize
from .int4 import pack_int4, pack_pairs, unpack_int4
from .qparams import choose_qparams
from .spec import INT4_SYMMETRIC_OFFSET, QuantSpec
from .sqnr import sqnr_sums


@dataclass
class QuantizedTensor:
    """Stored data (int8, or packed uint8 for int4), float32 scale and int8 zero point (asymmetric only)."""

    data: torch.Tensor
    scale: torch.Tensor
    zero_point: torch.Tensor | None


def int4_rows(shape: tuple[int, ...] | torch.Size) -> tuple[int, int]:
    """``(rows, codes per row)`` of the 2-D view int4 codes are packed in."""
    if len(shape) >= 2:
        return int(shape[0]), math.prod(int(d) for d in shape[1:])
    return 1, math.prod(int(d) for d in shape)


def stored_shape(shape: tuple[int, ...] | torch.Size, spec: QuantSpec) -> tuple[int, ...]:
    """Shape of the stored data for a weight of ``shape``."""
    if spec.dtype == "int8":
        return tuple(int(d) for d in shape)
    rows, n = int4_rows(shape)
    return (rows, (n + 1) // 2)


def stored_dtype(spec: QuantSpec) -> torch.dtype:
    return torch.int8 if spec.dtype == "int8" else torch.uint8


def encode(codes: torch.Tensor, spec: QuantSpec) -> torch.Tensor:
    """Integer codes (int8) to stored data: unchanged for int8, offset and packed for int4."""
    if spec.dtype == "int8":
        return codes.to(torch.int8)
    offset = INT4_SYMMETRIC_OFFSET if spec.symmetric else 0
    rows, n = int4_rows(codes.shape)
    return pack_int4((codes.to(torch.int16) + offset).reshape(rows, n))


def decode(data: torch.Tensor, spec: QuantSpec, shape: tuple[int, ...] | torch.Size) -> torch.Tensor:
    """Stored data back to int8 codes of ``shape``."""
    if spec.dtype == "int8":
        return data.reshape(shape)
    offset = INT4_SYMMETRIC_OFFSET if spec.symmetric else 0
    _, n = int4_rows(shape)
    return (unpack_int4(data, n).to(torch.int8) - offset).reshape(shape)


#: Values per block of rows quantized together: small enough to stay in the CPU's cache.
BLOCK_VALUES = 1 << 18


def code_range(data: torch.Tensor, spec: QuantSpec, shape: tuple[int, ...] | torch.Size) -> tuple[int, int] | None:
    """The smallest and largest code of stored ``data`` (None when empty), int4 unpacked block by
    block of rows so that checking a large weight costs a block, not a decoded copy of it."""
    if data.numel() == 0:
        return None
    if spec.dtype == "int8":
        return int(data.min()), int(data.max())
    offset = INT4_SYMMETRIC_OFFSET if spec.symmetric else 0
    rows, n = int4_rows(shape)
    packed = data.reshape(rows, -1)
    step = max(1, BLOCK_VALUES // max(1, n))
    lo, hi = 255, 0
    for i in range(0, rows, step):
        codes = unpack_int4(packed[i : i + step], n)
        lo, hi = min(lo, int(codes.min())), max(hi, int(codes.max()))
    return lo - offset, hi - offset


def quantize_weight(w: torch.Tensor, spec: QuantSpec) -> QuantizedTensor:
    """Min/max quantization of ``w`` into its stored form."""
    return quantize_weight_measured(w, spec, measure=False)[0]


@overload
def quantize_weight_measured(
    w: torch.Tensor, spec: QuantSpec, measure: Literal[True] = True
) -> tuple[QuantizedTensor, tuple[torch.Tensor, torch.Tensor]]: ...
@overload
def quantize_weight_measured(
    w: torch.Tensor, spec: QuantSpec, measure: bool
) -> tuple[QuantizedTensor, tuple[torch.Tensor, torch.Tensor] | None]: ...
def quantize_weight_measured(
    w: torch.Tensor,
    spec: QuantSpec,
    measure: bool = True,
) -> tuple[QuantizedTensor, tuple[torch.Tensor, torch.Tensor] | None]:
    """``quantize_weight`` and, with ``measure``, the SQNR sums ``(Σw², Σ(w−ŵ)²)`` of the result.

    Where rows are independent (per-channel along axis 0, per-group, and
    per-tensor once its range is known) the weight is processed in blocks of
    rows: ranges, codes, the dequantized values and the error of a block are
    computed while it is in cache, so a large weight is read from memory about
    twice instead of a dozen times.  The codes are those of the whole-tensor
    formulas: every step is element- or row-wise.
    """
    ndim = w.dim()
    by_rows = ndim >= 2 and (
        spec.granularity in ("per-tensor", "per-group") or (spec.granularity == "per-channel" and spec.axis % ndim == 0)
    )
    if not by_rows:
        scale, zero_point = choose_qparams(w, spec)
        codes = quantize(w, scale, zero_point, spec)
        sums = sqnr_sums(w, dequantize(codes, scale, zero_point, spec)) if measure else None
        return QuantizedTensor(encode(codes, spec), scale, zero_point), sums

    w = w.detach()
    rows = w.shape[0]
    step = max(1, BLOCK_VALUES // max(1, w[0].numel()))
    whole = choose_qparams(w, spec) if spec.granularity == "per-tensor" else None
    data = torch.empty(stored_shape(w.shape, spec), dtype=stored_dtype(spec), device=w.device)
    # Scratch blocks allocated once per weight and reused by every block: a
    # fresh process would otherwise fault in new pages for each block's
    # temporaries (that doubled the time of a first quantization).
    block_shape = (min(step, rows), *w.shape[1:])
    work = torch.empty(block_shape, dtype=torch.float32, device=w.device)
    spare = torch.empty_like(work) if measure or spec.dtype == "int4" else None
    staging = None if w.dtype == torch.float32 and w.is_contiguous() else torch.empty_like(work)
    packing = _Int4Packing(block_shape, spec, w.device) if spec.dtype == "int4" else None
    ragged = spec.granularity == "per-group" and int4_rows(w.shape)[1] % spec.group_size != 0
    scales: list[torch.Tensor] = []
    zero_points: list[torch.Tensor | None] = []
    # Adding to an exact float64 zero leaves every sum unchanged.
    signal = noise = torch.zeros((), dtype=torch.float64, device=w.device)
    for i in range(0, rows, step):
        block = w[i : i + step]
        n = block.shape[0]
        if staging is not None:
            block = staging[:n].copy_(block)
        scale, zero_point = whole if whole is not None else choose_qparams(block, spec)
        if whole is None:
            scales.append(scale)
            zero_points.append(zero_point)
        if ragged:  # padded groups: the allocating whole-tensor functions, block by block
            block_codes = quantize(block, scale, zero_point, spec)
            data[i : i + n] = encode(block_codes, spec)
            if measure:
                s, e = sqnr_sums(block, dequantize(block_codes, scale, zero_point, spec))
                signal, noise = signal + s, noise + e
            continue
        q = work[:n]
        float_codes(block, scale, zero_point, spec, out=q)
        if packing is None:
            data[i : i + n].copy_(q)  # exact integers in float32: the copy is exact
        else:
            assert spare is not None  # allocated for int4, which is what packing is for
            packing.pack_into(q, spare[:n], data[i : i + n])
        if measure:
            assert spare is not None  # allocated when measuring
            dequantize_(q, scale, zero_point, spec)
            err = torch.sub(block, q, out=spare[:n])
            # Float32 sums per block, float64 across blocks (as sqnr_sums does).
            e = err.mul_(err).sum().to(torch.float64)
            s = torch.mul(block, block, out=q).sum().to(torch.float64)
            signal, noise = signal + s, noise + e
    if whole is not None:
        scale, zero_point = whole
    else:
        scale = torch.cat(scales)
        # One scheme for the whole weight: every block has a zero point, or none has.
        zero_point = None if zero_points[0] is None else torch.cat([z for z in zero_points if z is not None])
    sums = (signal, noise) if measure else None
    return QuantizedTensor(data, scale, zero_point), sums


class _Int4Packing:
    """Packs blocks of int4 codes into stored rows as :func:`encode` does, in reused buffers."""

    def __init__(self, block_shape: tuple[int, ...], spec: QuantSpec, device: torch.device) -> None:
        rows, self.fan_in = int4_rows(block_shape)
        self.offset = INT4_SYMMETRIC_OFFSET if spec.symmetric else 0
        # An odd row gets one more code, 0, that stays 0 (pack_int4's padding).
        self.nibbles = torch.zeros((rows, self.fan_in + self.fan_in % 2), dtype=torch.uint8, device=device)
        self.high = torch.empty((rows, (self.fan_in + 1) // 2), dtype=torch.uint8, device=device)

    def pack_into(self, q: torch.Tensor, scratch: torch.Tensor, out: torch.Tensor) -> None:
        """Float32 codes ``q`` (integers in the int4 range) into packed rows ``out``; ``scratch`` is ``q``-shaped."""
        n = q.shape[0]
        stored = torch.add(q, self.offset, out=scratch)  # in [0, 15]: exact as uint8
        nibbles = self.nibbles[:n]
        nibbles[:, : self.fan_in].copy_(stored.reshape(n, self.fan_in))
        pack_pairs(nibbles, out=out, high=self.high[:n])


def dequantize_weight(
    data: torch.Tensor,
    scale: torch.Tensor,
    zero_point: torch.Tensor | None,
    spec: QuantSpec,
    shape: tuple[int, ...] | torch.Size,
) -> torch.Tensor:
    """Float32 weight of ``shape`` from its stored form."""
    return dequantize(decode(data, spec, shape), scale, zero_point, spec)


def dequantize_weight_into(
    data: torch.Tensor,
    scale: torch.Tensor,
    zero_point: torch.Tensor | None,
    spec: QuantSpec,
    shape: tuple[int, ...] | torch.Size,
    out: torch.Tensor,
) -> torch.Tensor:
    """:func:`dequantize_weight` written into ``out`` (contiguous float32, as many values as
    ``shape``) and returned with ``shape``: the same values, no float temporary."""
    w = out.view(tuple(shape))
    if spec.granularity == "per-group" and int4_rows(shape)[1] % spec.group_size:
        return w.copy_(dequantize_weight(data, scale, zero_point, spec, shape))  # padded groups
    w.copy_(decode(data, spec, shape))  # exact: integer codes in float32
    return dequantize_(w, scale, zero_point, spec)
