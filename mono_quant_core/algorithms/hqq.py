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
round-to-nearest's.  So no group's error is ever above round-to-nearest's.  Everything is
element-wise on CPU float32 and float64: two runs give the same codes.
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


def _shrink(x: torch.Tensor, beta: float) -> torch.Tensor:
    """The proximal operator of ``‖·‖_p^p`` (generalised soft threshold)."""
    return torch.sign(x) * torch.relu(x.abs() - x.abs().pow(LP_NORM - 1.0) / beta)


def _codes(w: torch.Tensor, s: torch.Tensor, z: torch.Tensor | None, spec: QuantSpec) -> torch.Tensor:
    """Float codes as the storage computes them: ``clamp(round(w / s) + zp)``."""
    q = torch.round(w / s)
    if z is not None:
        q = q + z
    return q.clamp_(spec.qmin, spec.qmax)


def _error(
    w: torch.Tensor, mask: torch.Tensor, s: torch.Tensor, z: torch.Tensor | None, spec: QuantSpec
) -> torch.Tensor:
    """Squared weight error per group (float64 ``[out, groups]``) of storable qparams ``s``, ``z``."""
    q = _codes(w, s, z, spec)
    dq = (q - z) * s if z is not None else q * s
    return ((w - dq).double().pow(2) * mask).sum(-1)


def hqq_qparams(
    w: torch.Tensor, spec: QuantSpec, group_size: int, iterations: int
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Scale (float32) and zero point (int8, asymmetric) per group of ``w`` flattened to
    ``[out, fan_in]`` in groups of ``group_size`` along dim 1: shape ``[out, groups]``."""
    rows = w.detach().reshape(w.shape[0], -1).to(torch.float32)
    g = to_groups(rows, group_size)  # [out, G, gs], the ragged last group zero-padded
    mask = to_groups(torch.ones_like(rows), group_size)
    count = mask.sum(-1, keepdim=True)
    grid = QuantSpec(spec.dtype, spec.symmetric, "per-group", 0, group_size)
    scale, zp = choose_qparams(rows, grid)
    best_s = scale.clone()
    best_z = None if zp is None else zp.clone()
    best_err = _error(g, mask, best_s[..., None], None if zp is None else zp[..., None].float(), spec)
    s = scale[..., None].clone()
    z = None if zp is None else zp[..., None].float()
    beta = BETA
    for _ in range(iterations):
        q = _codes(g, s, z, spec)
        centred = q - z if z is not None else q
        e = _shrink(g - centred * s, beta) * mask
        target = g - e
        if z is not None:
            z = ((q - target / s) * mask).sum(-1, keepdim=True) / count
            centred = q - z
        den = (centred.pow(2) * mask).sum(-1, keepdim=True)
        num = (centred * target * mask).sum(-1, keepdim=True)
        fitted = torch.where(den > 0, num / den.clamp(min=1e-30), s)
        s = torch.where(fitted > SCALE_EPS, fitted, s)
        beta *= KAPPA
        cand_z = None if z is None else torch.clamp(torch.round(z), spec.qmin, spec.qmax)
        err = _error(g, mask, s, cand_z, spec)
        better = err < best_err
        best_err = torch.where(better, err, best_err)
        best_s = torch.where(better, s[..., 0], best_s)
        if best_z is not None and cand_z is not None:
            best_z = torch.where(better, cand_z[..., 0].to(torch.int8), best_z)
    return best_s.contiguous(), None if best_z is None else best_z.contiguous()


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
