"""QuantizedMultiheadAttention: ``nn.MultiheadAttention`` with quantized input and output projections.

The twin replaces the whole attention module.  Its four projections are
``QuantizedLinear`` children — ``q_proj``, ``k_proj``, ``v_proj`` (the rows of
a packed ``in_proj_weight``, or the separate ``q/k/v_proj_weight`` when
``kdim`` / ``vdim`` differ) and ``out_proj`` — so they are quantized in every
mode exactly like a Linear and run on the same kernels.  The attention itself
(scores, masks, softmax, dropout, head averaging) is torch's
``F.multi_head_attention_forward`` reproduced step by step in float; only the
four projections change.  Splitting a packed ``in_proj_weight`` into three
rows blocks changes nothing per channel or per group; per tensor, each
projection gets its own scale.

Static mode quantizes each projection's input on its own calibrated grid:
query, key, value and the attention output that enters ``out_proj``
(``calibration.hooks`` observes all four; ``set_input_qparams`` takes them as
``[4]`` tensors in that order).

Also here: :func:`disable_fused_fast_paths`, which makes torch's transformer
layers take their regular path once any of their children is quantized (the
fused path reads ``linear1.weight`` and the attention weights directly).
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Iterable, Iterator
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.linear import NonDynamicallyQuantizableLinear

from ..config import QuantConfig
from ..errors import ConfigError, QuantizedFileError
from .base import QuantizedModule
from .linear import QuantizedLinear

#: The projections, in the order of static mode's input qparams.
PROJECTIONS = ("q_proj", "k_proj", "v_proj", "out_proj")
_HYPER = ("embed_dim", "kdim", "vdim", "_qkv_same_embed_dim", "num_heads", "dropout", "batch_first", "head_dim")

#: torch's private helpers of ``F.multi_head_attention_forward`` (not in its typed interface).
_F: Any = F
#: ``project(name, x)``: projection ``name`` (one of PROJECTIONS) applied to ``x``.
Project = Callable[[str, torch.Tensor], torch.Tensor]


def float_projections(mha: nn.MultiheadAttention) -> dict[str, tuple[torch.Tensor, torch.Tensor | None]]:
    """``{name: (weight, bias)}`` of the four projections of a float attention (views: no copy)."""
    if mha._qkv_same_embed_dim:
        weights = tuple(cast(torch.Tensor, mha.in_proj_weight).chunk(3))
    else:
        weights = (
            cast(torch.Tensor, mha.q_proj_weight),
            cast(torch.Tensor, mha.k_proj_weight),
            cast(torch.Tensor, mha.v_proj_weight),
        )
    bias = mha.in_proj_bias
    biases: tuple[torch.Tensor | None, ...] = (None, None, None) if bias is None else tuple(bias.chunk(3))
    out = mha.out_proj
    return {
        "q_proj": (weights[0], biases[0]),
        "k_proj": (weights[1], biases[1]),
        "v_proj": (weights[2], biases[2]),
        "out_proj": (out.weight, cast("torch.Tensor | None", out.bias)),
    }


def as_linear(weight: torch.Tensor, bias: torch.Tensor | None) -> nn.Linear:
    """An ``nn.Linear`` around ``weight`` and ``bias`` (their storage, not a copy)."""
    linear = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None, device="meta")
    linear.weight = nn.Parameter(weight.detach(), requires_grad=weight.requires_grad)
    if bias is not None:
        linear.bias = nn.Parameter(bias.detach(), requires_grad=bias.requires_grad)
    return linear


def _split_heads(t: torch.Tensor, bsz: int, num_heads: int, head_dim: int) -> torch.Tensor:
    return t.view(t.shape[0], bsz * num_heads, head_dim).transpose(0, 1)


def _attend(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    project: Project,
    m: Any,
    key_padding_mask: torch.Tensor | None,
    need_weights: bool,
    attn_mask: torch.Tensor | None,
    average_attn_weights: bool,
    is_causal: bool,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``F.multi_head_attention_forward`` (torch 2.13) with ``project`` for the four projections.

    ``m``: the float attention or its twin (hyperparameters, ``bias_k`` / ``bias_v``,
    ``training``).  Inputs are sequence first, as in torch.
    """
    num_heads, embed_dim = int(m.num_heads), int(m.embed_dim)
    is_batched = _F._mha_shape_check(query, key, value, key_padding_mask, attn_mask, num_heads)
    if not is_batched:
        query, key, value = query.unsqueeze(1), key.unsqueeze(1), value.unsqueeze(1)
        if key_padding_mask is not None:
            key_padding_mask = key_padding_mask.unsqueeze(0)
    tgt_len, bsz, width = query.shape
    src_len = key.shape[0]
    key_padding_mask = F._canonical_mask(
        mask=key_padding_mask,
        mask_name="key_padding_mask",
        other_type=F._none_or_dtype(attn_mask),
        other_name="attn_mask",
        target_type=query.dtype,
    )
    if is_causal and attn_mask is None:
        raise RuntimeError(
            "Need attn_mask if specifying the is_causal hint. You may use the Transformer module method "
            "`generate_square_subsequent_mask` to create this mask."
        )
    if is_causal and key_padding_mask is None and not need_weights:
        attn_mask = None  # scaled_dot_product_attention applies the causal mask itself
    else:
        attn_mask = F._canonical_mask(
            mask=attn_mask,
            mask_name="attn_mask",
            other_type=None,
            other_name="",
            target_type=query.dtype,
            check_other=False,
        )
        if key_padding_mask is not None:
            is_causal = False  # the merged mask is no longer causal
    if width != embed_dim:
        raise AssertionError(f"was expecting embedding dimension of {embed_dim}, but got {width}")
    head_dim = embed_dim // num_heads
    if m._qkv_same_embed_dim and key.shape != value.shape:
        raise AssertionError(f"key shape {key.shape} does not match value shape {value.shape}")
    if not m._qkv_same_embed_dim and key.shape[:2] != value.shape[:2]:
        raise AssertionError(f"key's sequence and batch dims {key.shape[:2]} do not match value's {value.shape[:2]}")

    q, k, v = project("q_proj", query), project("k_proj", key), project("v_proj", value)

    if attn_mask is not None:
        if attn_mask.dim() == 2:
            if attn_mask.shape != (tgt_len, src_len):
                raise RuntimeError(
                    f"The shape of the 2D attn_mask is {attn_mask.shape}, but should be {(tgt_len, src_len)}."
                )
            attn_mask = attn_mask.unsqueeze(0)
        elif attn_mask.dim() == 3:
            if attn_mask.shape != (bsz * num_heads, tgt_len, src_len):
                raise RuntimeError(
                    f"The shape of the 3D attn_mask is {attn_mask.shape}, but should be "
                    f"{(bsz * num_heads, tgt_len, src_len)}."
                )
        else:
            raise RuntimeError(f"attn_mask's dimension {attn_mask.dim()} is not supported")
    bias_k, bias_v = m.bias_k, m.bias_v
    if bias_k is not None and bias_v is not None:
        k = torch.cat([k, bias_k.to(k.dtype).repeat(1, bsz, 1)])
        v = torch.cat([v, bias_v.to(v.dtype).repeat(1, bsz, 1)])
        if attn_mask is not None:
            attn_mask = F.pad(attn_mask, (0, 1))
        if key_padding_mask is not None:
            key_padding_mask = F.pad(key_padding_mask, (0, 1))

    q = _split_heads(q, bsz, num_heads, head_dim)
    k = _split_heads(k, bsz, num_heads, head_dim)
    v = _split_heads(v, bsz, num_heads, head_dim)
    if m.add_zero_attn:
        zeros = torch.zeros((bsz * num_heads, 1, head_dim), dtype=k.dtype, device=k.device)
        k, v = torch.cat([k, zeros], dim=1), torch.cat([v, zeros], dim=1)
        if attn_mask is not None:
            attn_mask = F.pad(attn_mask, (0, 1))
        if key_padding_mask is not None:
            key_padding_mask = F.pad(key_padding_mask, (0, 1))
    src_len = k.size(1)
    if key_padding_mask is not None:
        _F._check_key_padding_mask(key_padding_mask, src_len, bsz)
        key_padding_mask = (
            key_padding_mask.view(bsz, 1, 1, src_len).expand(-1, num_heads, -1, -1).reshape(bsz * num_heads, 1, src_len)
        )
        attn_mask = key_padding_mask if attn_mask is None else attn_mask + key_padding_mask
    dropout_p = float(m.dropout) if m.training else 0.0

    if need_weights:
        q_scaled = q * math.sqrt(1.0 / float(q.shape[-1]))
        if attn_mask is not None:
            weights = torch.baddbmm(attn_mask, q_scaled, k.transpose(-2, -1))
        else:
            weights = torch.bmm(q_scaled, k.transpose(-2, -1))
        weights = F.softmax(weights, dim=-1)
        if dropout_p > 0.0:
            weights = F.dropout(weights, p=dropout_p)
        out = torch.bmm(weights, v).transpose(0, 1).reshape(tgt_len * bsz, embed_dim)
        out = project("out_proj", out).view(tgt_len, bsz, -1)
        weights = weights.view(bsz, num_heads, tgt_len, src_len)
        if average_attn_weights:
            weights = weights.mean(dim=1)
        if not is_batched:
            return out.squeeze(1), weights.squeeze(0)
        return out, weights
    if attn_mask is not None:
        if attn_mask.size(0) == 1 and attn_mask.dim() == 3:
            attn_mask = attn_mask.unsqueeze(0)
        else:
            attn_mask = attn_mask.view(bsz, num_heads, -1, src_len)
    q = q.view(bsz, num_heads, tgt_len, head_dim)
    k = k.view(bsz, num_heads, src_len, head_dim)
    v = v.view(bsz, num_heads, src_len, head_dim)
    out = F.scaled_dot_product_attention(q, k, v, attn_mask, dropout_p, is_causal)
    out = out.permute(2, 0, 1, 3).reshape(bsz * tgt_len, embed_dim)
    out = project("out_proj", out).view(tgt_len, bsz, -1)
    return (out if is_batched else out.squeeze(1)), None


def attention_forward(
    m: Any,
    project: Project,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    key_padding_mask: torch.Tensor | None = None,
    need_weights: bool = True,
    attn_mask: torch.Tensor | None = None,
    average_attn_weights: bool = True,
    is_causal: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``nn.MultiheadAttention.forward``'s regular path for attention ``m`` with projections ``project``."""
    is_batched = query.dim() == 3
    key_padding_mask = F._canonical_mask(
        mask=key_padding_mask,
        mask_name="key_padding_mask",
        other_type=F._none_or_dtype(attn_mask),
        other_name="attn_mask",
        target_type=query.dtype,
    )
    attn_mask = F._canonical_mask(
        mask=attn_mask,
        mask_name="attn_mask",
        other_type=None,
        other_name="",
        target_type=query.dtype,
        check_other=False,
    )
    if m.batch_first and is_batched:
        # Keep the identities (query is key is value) the way torch does.
        if key is value:
            if query is key:
                query = key = value = query.transpose(1, 0)
            else:
                query, key = (x.transpose(1, 0) for x in (query, key))
                value = key
        else:
            query, key, value = (x.transpose(1, 0) for x in (query, key, value))
    out, weights = _attend(
        query, key, value, project, m, key_padding_mask, need_weights, attn_mask, average_attn_weights, is_causal
    )
    if m.batch_first and is_batched:
        out = out.transpose(1, 0)
    return out, weights


_CALL = inspect.signature(nn.MultiheadAttention.forward)


def bind_call(args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
    """An attention call's arguments by name (defaults filled in), from a hook's ``args`` / ``kwargs``."""
    bound = _CALL.bind(None, *args, **kwargs)
    bound.apply_defaults()
    named = dict(bound.arguments)
    named.pop("self")
    return named


def observe_projection_inputs(
    mha: nn.MultiheadAttention,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    observe: Callable[[int, torch.Tensor], None],
) -> None:
    """Run float attention ``mha`` on a call's arguments, handing each projection's input to
    ``observe(i, x)`` (``i``: its index in PROJECTIONS).  Static calibration's view of the four inputs."""
    weights = float_projections(mha)

    def project(name: str, x: torch.Tensor) -> torch.Tensor:
        observe(PROJECTIONS.index(name), x)
        w, b = weights[name]
        return F.linear(x, w, b)

    attention_forward(mha, project, **bind_call(args, kwargs))


class QuantizedMultiheadAttention(QuantizedModule):
    """Replacement of ``nn.MultiheadAttention``: quantized projections, float attention."""

    float_type = nn.MultiheadAttention
    q_proj: QuantizedLinear
    k_proj: QuantizedLinear
    v_proj: QuantizedLinear
    out_proj: QuantizedLinear
    bias_k: nn.Parameter | None
    bias_v: nn.Parameter | None
    # Copied from the float module (_HYPER).
    embed_dim: int
    kdim: int
    vdim: int
    _qkv_same_embed_dim: bool
    num_heads: int
    dropout: float
    batch_first: bool
    head_dim: int

    def __init__(self, float_module: nn.Module, **settings: Any) -> None:
        super().__init__(**settings)
        for name in _HYPER:
            setattr(self, name, getattr(float_module, name))
        self.add_zero_attn = bool(getattr(float_module, "add_zero_attn", False))
        self.has_bias = float_module.in_proj_bias is not None

    # -- construction ------------------------------------------------------------------
    @classmethod
    def from_float(cls, module: nn.Module, config: QuantConfig) -> QuantizedMultiheadAttention:
        """The quantized replacement of ``module`` (an ``nn.MultiheadAttention``, never modified)."""
        mha = cast(nn.MultiheadAttention, module)  # the registry replaces exactly nn.MultiheadAttention
        q = cls(mha, **cls._settings(config))
        for name, (w, b) in float_projections(mha).items():
            q.add_module(name, QuantizedLinear.from_float(as_linear(w, b), config))
        q._store_float("bias_k", mha.bias_k)
        q._store_float("bias_v", mha.bias_v)
        return q

    @classmethod
    def from_meta(cls, meta: dict[str, Any], float_module: nn.Module) -> QuantizedMultiheadAttention:
        """An empty replacement of ``float_module`` shaped by ``meta``, ready for ``load_state_dict``."""
        mha = cast(nn.MultiheadAttention, float_module)
        q = cls(mha, **cls._settings_from_meta(meta))
        recorded = meta.get("weights") or {}
        layout = {k: v for k, v in meta.items() if k != "weights"}
        for name, (w, b) in float_projections(mha).items():
            shape = recorded.get(f"{name}.weight")
            if shape is not None and tuple(shape) != tuple(w.shape):
                raise QuantizedFileError(
                    f"layer record shape: {name}.weight is {tuple(shape)} in the file but "
                    f"{tuple(w.shape)} in the model's MultiheadAttention"
                )
            child_meta = {**layout, "type": "Linear", "shape": list(w.shape)}
            q.add_module(name, QuantizedLinear.from_meta(child_meta, as_linear(w, b)))
        q._empty_float("bias_k", mha.bias_k)
        q._empty_float("bias_v", mha.bias_v)
        return q

    def projections(self) -> Iterator[tuple[str, QuantizedLinear]]:
        """The four quantized projections, in PROJECTIONS order."""
        for name in PROJECTIONS:
            yield name, cast(QuantizedLinear, getattr(self, name))

    def to_float(self) -> nn.MultiheadAttention:
        """A plain float32 ``nn.MultiheadAttention`` with the dequantized projection weights."""
        m = nn.MultiheadAttention(
            self.embed_dim,
            self.num_heads,
            dropout=self.dropout,
            bias=self.has_bias,
            add_bias_kv=self.bias_k is not None,
            add_zero_attn=self.add_zero_attn,
            kdim=self.kdim,
            vdim=self.vdim,
            batch_first=self.batch_first,
            device="meta",
        )
        w = {name: p.dequantized_weight() for name, p in self.projections()}
        b = {name: p.float_tensor("bias", torch.float32) for name, p in self.projections()}
        if self._qkv_same_embed_dim:
            m.in_proj_weight = nn.Parameter(torch.cat([w["q_proj"], w["k_proj"], w["v_proj"]]))
        else:
            m.q_proj_weight = nn.Parameter(w["q_proj"])
            m.k_proj_weight = nn.Parameter(w["k_proj"])
            m.v_proj_weight = nn.Parameter(w["v_proj"])
        if self.has_bias:
            m.in_proj_bias = nn.Parameter(torch.cat([cast(torch.Tensor, b[n]) for n in ("q_proj", "k_proj", "v_proj")]))
            m.out_proj.bias = nn.Parameter(cast(torch.Tensor, b["out_proj"]))
        m.out_proj.weight = nn.Parameter(w["out_proj"])
        for name in ("bias_k", "bias_v"):
            t = self.float_tensor(name, torch.float32)
            if t is not None:
                setattr(m, name, nn.Parameter(t))
        return m.train(self.training)

    # -- what the base class keeps per weight stem, gathered from the projections --------
    @property
    def weight_error_sums(self) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """``{"q_proj.weight": (Σw², Σ(w−ŵ)²), ...}`` of the projections (for the layer's weight SQNR)."""
        return {f"{n}.weight": s for n, p in self._present() for s in p.weight_error_sums.values()}

    @weight_error_sums.setter
    def weight_error_sums(self, value: dict[str, tuple[torch.Tensor, torch.Tensor]]) -> None:
        if value:  # the base class starts it empty; the projections own theirs
            raise ConfigError("weight_error_sums: an attention's sums are its projections'")

    def _present(self) -> Iterable[tuple[str, QuantizedLinear]]:
        return ((n, p) for n, p in self._modules.items() if isinstance(p, QuantizedLinear))

    @property
    def in_proj_bias(self) -> torch.Tensor | None:
        """The packed q/k/v bias, as the float module has it (transformer layers test it)."""
        if not self.has_bias:
            return None
        return torch.cat(
            [
                cast(torch.Tensor, self.q_proj.bias),
                cast(torch.Tensor, self.k_proj.bias),
                cast(torch.Tensor, self.v_proj.bias),
            ]
        )

    @property
    def input_scale(self) -> torch.Tensor:
        """Static mode: the four projections' input scales ``[4]`` (query, key, value, out_proj input)."""
        return torch.cat([p.input_scale.reshape(1) for _, p in self.projections()])

    @input_scale.setter
    def input_scale(self, value: torch.Tensor) -> None:
        raise ConfigError("input_scale: set an attention's input qparams with set_input_qparams")

    @property
    def input_zero_point(self) -> torch.Tensor:
        return torch.cat([p.input_zero_point.reshape(1) for _, p in self.projections()])

    @input_zero_point.setter
    def input_zero_point(self, value: torch.Tensor) -> None:
        raise ConfigError("input_zero_point: set an attention's input qparams with set_input_qparams")

    def set_input_qparams(self, scale: torch.Tensor | float, zero_point: torch.Tensor | int) -> None:
        """Static mode: ``[4]`` scales and zero points (query, key, value, out_proj input), or one for all."""
        if self.mode != "static":
            raise ConfigError(f"mode: input quantization parameters need mode static, this layer is {self.mode}")
        scales = torch.as_tensor(scale, dtype=torch.float32).detach().reshape(-1)
        points = torch.as_tensor(zero_point).detach().reshape(-1)
        n = len(PROJECTIONS)
        if scales.numel() not in (1, n) or points.numel() != scales.numel():
            raise ConfigError(
                f"input qparams: an attention takes 1 or {n} scales and zero points, not {scales.numel()}"
            )
        for i, (_, p) in enumerate(self.projections()):
            j = i if scales.numel() == n else 0
            p.set_input_qparams(scales[j], points[j])

    def quant_meta(self) -> dict[str, Any]:
        meta = super().quant_meta()
        shapes = {f"{n}.weight": list(p.weight_shapes["weight"]) for n, p in self.projections()}
        e = self.embed_dim
        meta["shape"] = [3 * e, e] if self._qkv_same_embed_dim else shapes["q_proj.weight"]
        meta["weights"] = shapes
        return meta

    def dequantized_weights(self) -> dict[str, torch.Tensor]:
        """Float32 weights keyed by the float module's parameter names (``in_proj_weight``, ``out_proj.weight``)."""
        w = {name: p.dequantized_weight() for name, p in self.projections()}
        out = (
            {"in_proj_weight": torch.cat([w["q_proj"], w["k_proj"], w["v_proj"]])}
            if self._qkv_same_embed_dim
            else {f"{n}_weight": w[n] for n in ("q_proj", "k_proj", "v_proj")}
        )
        out["out_proj.weight"] = w["out_proj"]
        return out

    def weight_holders(self) -> list[tuple[QuantizedModule, str]]:
        return [(p, "weight") for _, p in self.projections()]

    def weight_range_problems(self) -> list[str]:
        return [f"{n}.{problem}" for n, p in self.projections() for problem in p.weight_range_problems()]

    # -- forward ---------------------------------------------------------------------------
    def project(self, name: str, x: torch.Tensor) -> torch.Tensor:
        """Projection ``name`` (one of PROJECTIONS) applied to ``x``."""
        return cast(QuantizedLinear, self._modules[name])(x)

    def forward(
        self,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        key_padding_mask: torch.Tensor | None = None,
        need_weights: bool = True,
        attn_mask: torch.Tensor | None = None,
        average_attn_weights: bool = True,
        is_causal: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        out = attention_forward(
            self,
            self.project,
            query,
            key,
            value,
            key_padding_mask,
            need_weights,
            attn_mask,
            average_attn_weights,
            is_causal,
        )
        kernels = list(dict.fromkeys(p.kernel for _, p in self.projections()))
        self.kernel = kernels[0] if len(kernels) == 1 else "+".join(kernels)
        return out

    def extra_repr(self) -> str:
        return f"embed_dim={self.embed_dim}, num_heads={self.num_heads}, {super().extra_repr()}"


class QuantizedNonDynamicallyQuantizableLinear(QuantizedLinear):
    """A standalone ``NonDynamicallyQuantizableLinear`` (torch's name for an attention's ``out_proj``
    type): a Linear in every respect, recorded under its own type name so a file reloads into it."""

    float_type = NonDynamicallyQuantizableLinear

    def to_float(self) -> NonDynamicallyQuantizableLinear:
        linear = super().to_float()
        m = NonDynamicallyQuantizableLinear(
            self.in_features, self.out_features, bias=self.bias is not None, device="meta"
        )
        m.weight = linear.weight
        if linear.bias is not None:
            m.bias = linear.bias
        return m


# -- torch's fused transformer paths ----------------------------------------------------------
def _ancestors(names: Iterable[str]) -> set[str]:
    """Every proper ancestor path of ``names`` (``""`` included)."""
    found: set[str] = set()
    for name in names:
        parts = name.split(".") if name else []
        for i in range(len(parts)):
            found.add(".".join(parts[:i]))
    return found


def disable_fused_fast_paths(model: nn.Module, names: Iterable[str] | None = None) -> list[str]:
    """Make every ``nn.TransformerEncoderLayer`` (and ``nn.TransformerEncoder``) with a quantized
    child take torch's regular path; returns the names of the layers changed.

    In eval mode these layers call ``torch._transformer_encoder_layer_fwd``, which reads
    ``linear1.weight``, ``self_attn.in_proj_weight`` ... directly: on a quantized child it
    would meet int8 codes.  ``activation_relu_or_gelu`` is the flag that fast path needs (torch
    reads it nowhere else: the regular path calls ``self.activation``), so it is set to 0; an
    encoder's nested-tensor path is turned off with its ``use_nested_tensor``.  ``names``: the
    layers that are or will be replaced (None: the quantized modules in ``model`` now).  Only
    ``model``'s own module objects change: call it on the quantized clone, never a user's model.
    """
    if names is None:
        names = [n for n, m in model.named_modules() if isinstance(m, QuantizedModule)]
    holders = _ancestors(names)
    changed = []
    for name, module in model.named_modules():
        if name not in holders:
            continue
        if isinstance(module, nn.TransformerEncoderLayer) and module.activation_relu_or_gelu:
            module.activation_relu_or_gelu = 0
            changed.append(name)
        elif isinstance(module, nn.TransformerEncoder) and getattr(module, "use_nested_tensor", False):
            module.use_nested_tensor = False
            changed.append(name)
    return changed
