"""int4 storage: two 4-bit codes per uint8 byte along the last dimension, low nibble first."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..errors import MonoQuantError


def pack_int4(codes: torch.Tensor) -> torch.Tensor:
    """Pack codes in [0, 15] of shape ``[..., n]`` into uint8 ``[..., ceil(n / 2)]``; odd n is padded with 0."""
    if codes.numel() and (int(codes.min()) < 0 or int(codes.max()) > 15):
        raise MonoQuantError("int4 pack: codes must lie in [0, 15]")
    c = codes.to(torch.uint8)
    if c.ndim == 0:
        c = c.reshape(1)
    if c.shape[-1] % 2:
        c = F.pad(c, (0, 1))
    return pack_pairs(c)


def pack_pairs(codes: torch.Tensor, out: torch.Tensor | None = None, high: torch.Tensor | None = None) -> torch.Tensor:
    """uint8 codes in [0, 15] of shape ``[..., 2m]`` as ``[..., m]`` bytes, low nibble first.

    ``out`` and ``high`` (both ``[..., m]`` uint8): buffers for the result and
    the shifted high nibbles, for callers that pack many blocks without allocating.
    """
    pairs = codes.reshape(*codes.shape[:-1], codes.shape[-1] // 2, 2)
    high = torch.bitwise_left_shift(pairs[..., 1], 4, out=high)
    return torch.bitwise_or(pairs[..., 0], high, out=out)


def unpack_int4(packed: torch.Tensor, n: int) -> torch.Tensor:
    """The ``n`` uint8 codes per row packed by :func:`pack_int4` (shape ``[..., n]``)."""
    if packed.dtype != torch.uint8:
        raise MonoQuantError(f"int4 unpack: packed data must be uint8, got {packed.dtype}")
    if not 0 <= n <= 2 * packed.shape[-1] or 2 * packed.shape[-1] - n > 1:
        raise MonoQuantError(f"int4 unpack: {packed.shape[-1]} bytes per row cannot hold {n} codes")
    low, high = packed & 0x0F, packed >> 4
    codes = torch.stack((low, high), dim=-1).reshape(*packed.shape[:-1], 2 * packed.shape[-1])
    return codes[..., :n]
