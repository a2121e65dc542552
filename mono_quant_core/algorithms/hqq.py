"""HQQ: data-free half-quadratic fitting of scales and zero points (docs/quantization-math.md, "HQQ").

Half-Quadratic Quantization (Badri & Shaji 2023, mobiusml/hqq) fits a group's grid to its own
weights, with no calibration data: it minimises ``‖W − Q⁻¹(Q(W))‖_p^p`` (``p < 1``: robust to the
few large weights) by splitting off an error ``W_e`` and alternating a shrinkage step for ``W_e``
with closed-form updates of the grid.  Each iteration (``hqq_iterations``, a fixed count):

* ``q = clamp(round(W / s + z))``, ``W_r = (q − z) s``;
* ``W_e = sign(W − W_r) · relu(|W − W_r| − |W − W_r|^(p−1) / β)`` (the proximal step of ``‖·‖_p^p``);
* ``z = mean(q − (W − W_e) / s)`` (asymmetric; HQQ's closed-form zero update), and the
  least-squares scale ``s = Σ (q − z)(W − W_e) / Σ (q − z)²``; ``β ← κ β``.

Our storage holds float32 scales and int8 integer zero points (none when symmetric, where
only the scale is fitted): each iterate is made to fit (zero point rounded and clamped) and,
per group, the one with the lowest squared weight error is kept, starting from
round-to-nearest's.  So no group's error is ever above round-to-nearest's.

Speed: rows are fitted in chunks of about :data:`CHUNK_VALUES` values in float32 work buffers
allocated once per chunk and updated in place (peak memory a few MiB over the weight, whatever its
size); ``|W − W_r|`` is taken once per iteration and raised to ``p − 1`` once; ``round(W / s)`` is
shared by the candidate's error and the next iteration's codes; the zero-point mean divides one sum
by ``s`` instead of every value; padding is masked only when the last group is ragged.  On the
30522 × 384 word embedding of all-MiniLM-L6-v2 (int4 g128, 20 iterations, 2 cores) that is 0.9 s
instead of 9 s, with the same weight error to 3e-6 relative.  No early stop: HQQ's reference
stops when its mean error stops falling, but ours falls through all 20 iterations on MiniLM.
Everything is element-wise or a per-group reduction on CPU float32 in a fixed chunking: two runs
give the same codes.
"""

from __future__ import annotations

import torch
from torch import nn

from ..config import QuantConfig
from ..modules.base import QuantizedModule
from ..tensor import SCALE_EPS, QuantizedTensor, QuantSpec, choose_qparams, encode, quantize
from ..tensor.layout import to_groups

#: HQQ's defaults (mobiusml/hqq ``optimize_weights_proximal``): the norm, the penalty and its growth.
LP_NORM = 0.7
BETA = 10.0
KAPPA = 1.01
#: Values fitted at once: whole rows, about 1 MiB of float32 per work buffer (seven of them), so a
#: 30522 × 384 embedding costs a few MiB over its weight, not several copies of it.
CHUNK_VALUES = 1 << 18


class _Work:
    """Float32 work buffers of one chunk ``[rows, groups, group_size]``, reused by every iteration."""

    def __init__(self, like: torch.Tensor) -> None:
        self.rounded = torch.empty_like(like)  # round(w / s)
        self.codes = torch.empty_like(like)
        self.residual = torch.empty_like(like)
        self.shrunk = torch.empty_like(like)
        self.power = torch.empty_like(like)


def _error(g: torch.Tensor, work: _Work, s: torch.Tensor, z: torch.Tensor | None, spec: QuantSpec) -> torch.Tensor:
    """Squared weight error per group ``[rows, groups]`` of storable qparams ``s``, ``z`` (integer
    zero points), with ``work.rounded`` holding ``round(g / s)``.  Padding needs no mask: its codes
    are the zero point, so it dequantizes to 0 exactly."""
    q = work.codes
    if z is not None:
        torch.add(work.rounded, z, out=q).clamp_(spec.qmin, spec.qmax).sub_(z)
    else:
        torch.clamp(work.rounded, spec.qmin, spec.qmax, out=q)
    diff = torch.sub(g, q.mul_(s), out=work.residual)
    return torch.linalg.vecdot(diff, diff)


def _fit(
    g: torch.Tensor,
    mask: torch.Tensor | None,
    scale: torch.Tensor,
    zp: torch.Tensor | None,
    spec: QuantSpec,
    iterations: int,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """HQQ on the groups ``g`` (``[rows, G, gs]``; ``mask`` marks real values when the last group
    is padded) from round-to-nearest's ``scale``, ``zp`` (``[rows, G]``): the best storable iterate
    per group."""
    work = _Work(g)
    count = float(g.shape[-1]) if mask is None else mask.sum(-1, keepdim=True)
    s = scale[..., None].clone()
    z = None if zp is None else zp[..., None].float()
    torch.div(g, s, out=work.rounded).round_()
    best_err = _error(g, work, s, z, spec)
    best_s = scale.clone()
    best_z = None if zp is None else zp.clone()
    beta = BETA
    for _ in range(iterations):
        # Codes of the current (unrounded) zero point and the residual they leave.
        q = work.codes
        if z is not None:
            torch.add(work.rounded, z, out=q).clamp_(spec.qmin, spec.qmax)
            centred = torch.sub(q, z, out=work.shrunk)
        else:
            centred = torch.clamp(work.rounded, spec.qmin, spec.qmax, out=q)
        residual = torch.sub(g, torch.mul(centred, s, out=work.residual), out=work.residual)
        # Shrinkage: W_e = sign(r) · relu(|r| − |r|^(p−1) / β), |r| taken once.
        size = torch.abs(residual, out=work.shrunk)
        shrink = torch.pow(size, LP_NORM - 1.0, out=work.power).div_(beta)
        error = torch.copysign(size.sub_(shrink).clamp_min_(0.0), residual, out=work.shrunk)
        if mask is not None:
            error.mul_(mask)
        target = torch.sub(g, error, out=work.power)  # W − W_e (0 in the padding)
        if z is not None:
            # z = mean(q − target / s): s is one value per group, so divide the sum once.
            q_sum = q.sum(-1, keepdim=True) if mask is None else torch.linalg.vecdot(q, mask)[..., None]
            z = (q_sum - target.sum(-1, keepdim=True) / s) / count
            centred = q.sub_(z)
            if mask is not None:
                centred.mul_(mask)
        else:
            centred = q
        den = torch.linalg.vecdot(centred, centred)[..., None]
        num = torch.linalg.vecdot(centred, target)[..., None]
        fitted = torch.where(den > 0, num / den.clamp(min=1e-30), s)
        s = torch.where(fitted > SCALE_EPS, fitted, s)
        beta *= KAPPA
        # The storable candidate: the zero point rounded and clamped, scored on its weight error.
        torch.div(g, s, out=work.rounded).round_()
        cand_z = None if z is None else torch.clamp(torch.round(z), spec.qmin, spec.qmax)
        err = _error(g, work, s, cand_z, spec)
        better = err < best_err
        best_err = torch.where(better, err, best_err)
        best_s = torch.where(better, s[..., 0], best_s)
        if best_z is not None and cand_z is not None:
            best_z = torch.where(better, cand_z[..., 0].to(torch.int8), best_z)
    return best_s, best_z


def hqq_qparams(
    w: torch.Tensor, spec: QuantSpec, group_size: int, iterations: int
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Scale (float32) and zero point (int8, asymmetric) per group of ``w`` flattened to
    ``[out, fan_in]`` in groups of ``group_size`` along dim 1: shape ``[out, groups]``.  Rows are
    fitted in chunks of about :data:`CHUNK_VALUES` values (each group is independent)."""
    rows = w.detach().reshape(w.shape[0], -1).to(torch.float32)
    grid = QuantSpec(spec.dtype, spec.symmetric, "per-group", 0, group_size)
    scale, zp = choose_qparams(rows, grid)
    ragged = rows.shape[1] % group_size != 0
    step = max(1, CHUNK_VALUES // max(1, rows.shape[1]))
    out_s = torch.empty_like(scale)
    out_z = None if zp is None else torch.empty_like(zp)
    for start in range(0, rows.shape[0], step):
        part = slice(start, start + step)
        g = to_groups(rows[part], group_size)  # the ragged last group zero-padded
        mask = to_groups(torch.ones_like(rows[part]), group_size) if ragged else None
        s, z = _fit(g, mask, scale[part], None if zp is None else zp[part], spec, iterations)
        out_s[part] = s
        if out_z is not None and z is not None:
            out_z[part] = z
    return out_s, out_z


def _fits(spec: QuantSpec, shape: tuple[int, ...]) -> bool:
    return len(shape) >= 2 and (
        spec.granularity == "per-group" or (spec.granularity == "per-channel" and spec.axis % len(shape) == 0)
    )


def quantize_module(qmodule: QuantizedModule, float_module: nn.Module, config: QuantConfig) -> bool:
    """Fit every int weight of ``qmodule`` (Linear, Conv, Embedding, the weights of an RNN) with
    HQQ, taking the float weights from ``float_module``; whether any was set.  Per-group, and
    per-channel on axis 0 (one group per row); other weights keep round-to-nearest's."""
    spec = qmodule.spec
    if spec is None:
        return False
    done = False
    with torch.no_grad():
        for stem, shape in qmodule.weight_shapes.items():
            weight = getattr(float_module, stem, None)
            if not isinstance(weight, torch.Tensor) or not _fits(spec, shape):
                continue
            weight = weight.detach()
            fan_in = weight[0].numel()
            group = int(spec.group_size) if spec.granularity == "per-group" else fan_in
            scale, zp = hqq_qparams(weight, spec, group, config.hqq_iterations)
            if spec.granularity == "per-channel":
                scale, zp = scale[:, 0].contiguous(), None if zp is None else zp[:, 0].contiguous()
            codes = quantize(weight.to(torch.float32), scale, zp, spec)
            qmodule.set_weight(stem, QuantizedTensor(encode(codes, spec), scale, zp), reference=weight)
            done = True
    return done
