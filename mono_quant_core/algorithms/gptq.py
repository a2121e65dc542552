"""GPTQ: round a layer's weights column by column, correcting the rest (docs/quantization-math.md, "GPTQ").

For a layer computing ``y = W x`` and inputs ``X`` from calibration samples, GPTQ (Frantar et
al. 2022) rounds ``W`` to minimise the output error ``‖W X − Ŵ X‖²`` rather than the weight
error.  With the Hessian ``H = 2/n Σ x xᵀ`` of that objective it quantizes one input column
at a time and spreads the column's rounding error over the columns not yet quantized, with
the row of the upper Cholesky factor of ``H⁻¹``: ``W[:, j:] −= (w_j − q_j) / U_jj · U_j,j:``.
Columns are processed in blocks (lazy updates: the error of a block reaches the later columns
in one matrix product).  This follows the reference implementation (IST-DASLab/gptq
``fasterquant``) with the same scale rule as round-to-nearest
(:func:`mono_quant_core.tensor.choose_qparams`), so the codes use the same storage and kernels.

Everything is computed in float64 (the Hessian is accumulated in float64 too): a layer costs
its ``[in, in]`` Hessian and a float64 copy of its weight, freed when the layer is done.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import cast

import torch
import torch.nn.functional as F
from torch import nn

from ..config import QuantConfig
from ..modules.base import QuantizedModule
from ..modules.conv import QuantizedConvNd
from ..modules.linear import QuantizedLinear
from ..tensor import QuantizedTensor, QuantSpec, choose_qparams, encode

#: Damping is multiplied by this much and retried when ``H`` is still not positive definite.
DAMP_RETRY_FACTOR = 10.0
DAMP_RETRIES = 4


# -- the Hessian ----------------------------------------------------------------------------------
def _unfold_rows(module: nn.Module, x: torch.Tensor) -> torch.Tensor | None:
    """The rows a layer's weight (flattened to ``[out, fan_in]``) multiplies: ``[n, fan_in]``.

    Linear: its input's last dimension.  Conv1d/Conv2d (``groups == 1``, zero padding): the
    input's patches (``F.unfold``), whose order (channel, then kernel positions) is the order
    of the flattened weight.  None when the layer or input is not one of these.
    """
    if isinstance(module, nn.Linear):
        return x.reshape(-1, module.in_features) if x.shape[-1] == module.in_features else None
    conv = cast(nn.Conv2d, module)
    kernel: tuple[int, ...]
    dilation: tuple[int, ...]
    padding: tuple[int, ...]
    stride: tuple[int, ...]
    if isinstance(module, nn.Conv1d):
        if x.dim() == 2:
            x = x.unsqueeze(0)
        x = x.unsqueeze(-2)  # [N, C, 1, L]
        kernel, dilation = (1, conv.kernel_size[0]), (1, conv.dilation[0])
        padding, stride = (0, cast(tuple, conv.padding)[0]), (1, conv.stride[0])
    else:
        if x.dim() == 3:
            x = x.unsqueeze(0)
        kernel, dilation = tuple(conv.kernel_size), tuple(conv.dilation)
        padding, stride = cast(tuple, conv.padding), tuple(conv.stride)
    patches = F.unfold(x, kernel, dilation=dilation, padding=padding, stride=stride)  # [N, fan_in, L]
    return patches.transpose(1, 2).reshape(-1, patches.shape[1])


def supports(module: nn.Module) -> bool:
    """Whether GPTQ can round ``module``'s weight: Linear, and Conv1d/2d without groups or
    non-zero padding modes (their patches are what the flattened weight multiplies)."""
    if type(module) is nn.Linear:
        return True
    if type(module) in (nn.Conv1d, nn.Conv2d):
        conv = cast(nn.Conv2d, module)
        return conv.groups == 1 and conv.padding_mode == "zeros" and not isinstance(conv.padding, str)
    return False


def hessian(module: nn.Module, inputs: Iterable[torch.Tensor]) -> torch.Tensor | None:
    """``H = 2/n Σ x xᵀ`` (float64 ``[fan_in, fan_in]``) over every row of every input; None when
    there were none, or an input was not finite."""
    total: torch.Tensor | None = None
    count = 0
    for x in inputs:
        if not x.is_floating_point() or x.numel() == 0:
            continue
        rows = _unfold_rows(module, x.detach())
        if rows is None:
            continue
        rows = rows.to(torch.float64)
        if not bool(torch.isfinite(rows).all()):
            return None
        part = rows.T @ rows
        total = part if total is None else total.add_(part)
        count += rows.shape[0]
    if total is None or count == 0:
        return None
    return total.mul_(2.0 / count)


def inverse_cholesky(h: torch.Tensor, damp: float) -> torch.Tensor | None:
    """The upper Cholesky factor ``U`` of ``(H + λI)⁻¹`` (``UᵀU = (H + λI)⁻¹``), with
    ``λ = damp · mean(diag H)``; the damping grows tenfold (a few times) when ``H`` is not
    positive definite.  None when it still is not."""
    mean_diag = float(torch.diag(h).mean())
    for attempt in range(DAMP_RETRIES + 1):
        damped = h.clone()
        damped.diagonal().add_(damp * mean_diag * DAMP_RETRY_FACTOR**attempt)
        lower, info = torch.linalg.cholesky_ex(damped)
        if int(info) != 0:
            continue
        inverse = torch.cholesky_inverse(lower)
        upper, info = torch.linalg.cholesky_ex(inverse, upper=True)
        if int(info) == 0:
            return upper
    return None


# -- rounding ---------------------------------------------------------------------------------------
def _column_spec(spec: QuantSpec) -> QuantSpec:
    """The spec of a ``[rows, k]`` slice with one scale per row (what a group or a channel is)."""
    return QuantSpec(spec.dtype, spec.symmetric, "per-channel", 0)


def _qparams(w: torch.Tensor, spec: QuantSpec) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Round-to-nearest's float32 scale and int8 zero point per row of ``w`` (``[rows, k]``)."""
    return choose_qparams(w.to(torch.float32), _column_spec(spec))


def _round(
    w: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor | None, spec: QuantSpec
) -> tuple[torch.Tensor, torch.Tensor]:
    """Codes (float64) and dequantized values of column ``w`` (``[rows]``) on a per-row grid."""
    s = scale.to(torch.float64)
    q = torch.round(w / s)
    if zero_point is not None:
        zp = zero_point.to(torch.float64)
        q = (q + zp).clamp_(spec.qmin, spec.qmax)
        return q, (q - zp) * s
    q = q.clamp_(spec.qmin, spec.qmax)
    return q, q * s


def _block_size(block: int, group: int | None) -> int:
    """Columns per lazy block, adjusted so that a group's scale is always taken from current
    weights: a multiple of the group size (groups start inside a block and end in it), or a
    divisor of it (groups start at a block's start, when every later column is up to date)."""
    if group is None:
        return block
    if block >= group:
        return block - block % group
    return max(d for d in range(1, block + 1) if group % d == 0)


def gptq_codes(
    weight: torch.Tensor,
    h: torch.Tensor,
    spec: QuantSpec,
    damp: float = 0.01,
    act_order: bool = False,
    block_size: int = 128,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None] | None:
    """GPTQ on a 2-D weight ``[out, fan_in]`` with Hessian ``h``: ``(codes int8, scale, zero_point)``
    in the layout of ``spec`` (per-channel on axis 0: ``[out]``; per-group: ``[out, groups]``).

    Dead inputs (``H_jj = 0``, never non-zero in calibration) get ``H_jj = 1`` and a zero weight
    column, as in the reference.  Per-channel scales come from the whole weight (dead columns
    zeroed); group scales from the group's current (error-updated) columns when the group's
    first column is reached.  With ``act_order`` columns go by decreasing ``H_jj``; groups stay
    the contiguous column ranges of the stored layout, with scales from the original weight
    ("static groups": a group's columns are no longer processed together).  None when the
    damped Hessian cannot be factorised.
    """
    w = weight.detach().to(torch.float64, copy=True)
    h = h.to(torch.float64, copy=True)
    rows, columns = w.shape
    dead = torch.diag(h) == 0
    h[dead, dead] = 1.0
    w[:, dead] = 0.0
    grouped = spec.granularity == "per-group"
    group = int(spec.group_size) if grouped else None
    n_groups = -(-columns // group) if group is not None else 1
    scales = torch.empty((rows, n_groups), dtype=torch.float32)
    zeros = None if spec.symmetric else torch.empty((rows, n_groups), dtype=torch.int8)

    def set_group(g: int, values: torch.Tensor) -> None:
        s, z = _qparams(values, spec)
        scales[:, g] = s
        if zeros is not None and z is not None:
            zeros[:, g] = z

    if group is None:
        set_group(0, w)
    elif act_order:  # static groups, from the weight before any update
        for g in range(n_groups):
            set_group(g, w[:, g * group : (g + 1) * group])
    perm = None
    if act_order:
        perm = torch.argsort(torch.diag(h), descending=True, stable=True)
        w, h = w[:, perm], h[perm][:, perm]
    u = inverse_cholesky(h, damp)
    if u is None:
        return None
    del h
    codes = torch.empty_like(w)
    step = _block_size(block_size, None if act_order else group)
    for i1 in range(0, columns, step):
        i2 = min(i1 + step, columns)
        w1 = w[:, i1:i2].clone()
        err1 = torch.empty_like(w1)
        u1 = u[i1:i2, i1:i2]
        for i in range(i2 - i1):
            j = i1 + i
            column = int(perm[j]) if perm is not None else j  # in the stored layout
            g = column // group if group is not None else 0
            if group is not None and not act_order and j % group == 0:
                # The group's current columns: at a block's start every later column is up to
                # date; a group starting inside a block ends in it (_block_size).
                set_group(g, w[:, j : j + group] if i == 0 else w1[:, i : i + group])
            zp = None if zeros is None else zeros[:, g]
            q, dq = _round(w1[:, i], scales[:, g], zp, spec)
            codes[:, j] = q
            e = (w1[:, i] - dq) / u1[i, i]
            w1[:, i:] -= e[:, None] * u1[i, i:][None, :]
            err1[:, i] = e
        w[:, i2:] -= err1 @ u[i1:i2, i2:]
    if perm is not None:
        codes = codes[:, torch.argsort(perm)]
    codes_i8 = codes.to(torch.int8)
    if group is None:
        return codes_i8, scales[:, 0].contiguous(), None if zeros is None else zeros[:, 0].contiguous()
    return codes_i8, scales, zeros


# -- the module -------------------------------------------------------------------------------------
def quantize_module(
    qmodule: QuantizedModule, float_module: nn.Module, inputs: Iterable[torch.Tensor], config: QuantConfig
) -> bool:
    """Round ``qmodule``'s weight with GPTQ on ``inputs`` (the layer's inputs, sample by sample);
    whether it did.  Linear and Conv1d/2d twins with int codes and per-channel (axis 0) or
    per-group scales; anything else (no inputs, a Hessian that cannot be factorised) keeps
    round-to-nearest's codes."""
    spec = qmodule.spec
    if spec is None or not isinstance(qmodule, (QuantizedLinear, QuantizedConvNd)) or not supports(float_module):
        return False
    if spec.granularity == "per-tensor" or (spec.granularity == "per-channel" and spec.axis != 0):
        return False
    weight = cast(torch.Tensor, float_module.weight).detach()
    with torch.no_grad():
        h = hessian(float_module, inputs)
        if h is None:
            return False
        flat = weight.reshape(weight.shape[0], -1)
        result = gptq_codes(flat, h, spec, config.gptq_damp, config.gptq_act_order, config.gptq_block_size)
        del h
        if result is None:
            return False
        codes, scale, zero_point = result
        qt = QuantizedTensor(encode(codes.reshape(weight.shape), spec), scale, zero_point)
        qmodule.set_weight("weight", qt, reference=weight)
    return True
