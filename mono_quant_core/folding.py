"""``fold_batchnorm``: Conv→BatchNorm pairs folded into the convolution before quantization.

A BatchNorm in eval mode is an affine map per channel, ``y = (z − μ)·g/√(σ² + ε) + β``;
when it reads nothing but a convolution's output ``z = W conv x + b`` it folds into that
convolution: ``W' = W·s`` per output channel and ``b' = (b − μ)·s + β`` with
``s = g/√(σ² + ε)`` (the running statistics: folding is an inference-time rewrite).
The convolution is then quantized with the BatchNorm's scale inside its weight, one
rounding instead of a rounded convolution followed by a float rescale, and the
BatchNorm's pass is gone (docs/quantization-math.md, "Folding BatchNorm").

Pairs are found in the model's ``torch.fx`` graph when it traces (the BatchNorm's
only input is the convolution's output, which nothing else reads, and both modules
are called once); a model that does not trace is searched for adjacent children of
an ``nn.Sequential`` instead.  Folding happens on a shallow clone: the caller's model
is never changed.  Each folded BatchNorm becomes a :class:`FoldedBatchNorm` (an
identity that remembers what it was); the file lists them (``folded_batchnorm``,
docs/file-format.md) and :func:`restore_folded` puts the identities back when the
user's script, which still builds the BatchNorm, is loaded with the file.
"""

from __future__ import annotations

import itertools
import logging
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from .errors import QuantizedFileError
from .structure import get_submodule, names_by_module, set_submodule, shallow_clone

log = logging.getLogger("mono_quant_core")

#: The convolutions a BatchNorm of the same dimension folds into (exact types).
_PAIRS: dict[type[nn.Module], type[nn.Module]] = {
    nn.BatchNorm1d: nn.Conv1d,
    nn.BatchNorm2d: nn.Conv2d,
    nn.BatchNorm3d: nn.Conv3d,
}


class FoldedBatchNorm(nn.Identity):
    """A BatchNorm folded into the convolution before it: passes its input through unchanged."""

    def __init__(self, batchnorm_type: str, into: str) -> None:
        super().__init__()
        #: The class name of the BatchNorm this replaces (``BatchNorm2d``) and the convolution it went into.
        self.batchnorm_type = batchnorm_type
        self.into = into

    def extra_repr(self) -> str:
        return f"{self.batchnorm_type} folded into {self.into or 'the model'}"


@dataclass
class FoldResult:
    """The model with its pairs folded (the caller's own model when nothing folded), the pairs
    ``(conv, batchnorm)`` folded, and ``{batchnorm: why not}`` for every BatchNorm left as it was."""

    model: nn.Module
    folded: list[tuple[str, str]] = field(default_factory=list)
    not_folded: dict[str, str] = field(default_factory=dict)


def fold_batchnorm(model: nn.Module) -> FoldResult:
    """A clone of ``model`` with every foldable Conv→BatchNorm pair folded; logs what it did."""
    pairs, refused = find_pairs(model)
    for name, why in refused.items():
        log.info("fold_batchnorm: %s not folded: %s", name, why)
    if not pairs:
        return FoldResult(model, [], refused)
    folded = shallow_clone(model)
    for conv_name, bn_name in pairs:
        conv, bn = get_submodule(folded, conv_name), get_submodule(folded, bn_name)
        weight, bias = folded_weight_and_bias(conv, bn)
        # The clone's conv is its own object with its own parameter dict: the caller's keeps its tensors.
        conv.weight = nn.Parameter(weight, requires_grad=False)
        conv.bias = nn.Parameter(bias, requires_grad=False)
        set_submodule(folded, bn_name, FoldedBatchNorm(type(bn).__name__, conv_name))
        log.info("fold_batchnorm: %s folded into %s", bn_name, conv_name)
    return FoldResult(folded, pairs, refused)


def folded_weight_and_bias(conv: nn.Module, bn: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """``(W·s, (b − μ)·s + β)`` with ``s = g/√(σ² + ε)``, computed in float64, in the conv weight's dtype."""
    weight = _tensor(conv, "weight")
    dtype = weight.dtype
    mean, var = _tensor(bn, "running_mean").double(), _tensor(bn, "running_var").double()
    scale = torch.rsqrt(var + float(getattr(bn, "eps", 1e-5)))
    gamma, beta = getattr(bn, "weight", None), getattr(bn, "bias", None)
    if isinstance(gamma, torch.Tensor):
        scale = scale * gamma.detach().double()
    bias = getattr(conv, "bias", None)
    b = bias.detach().double() if isinstance(bias, torch.Tensor) else torch.zeros_like(mean)
    b = (b - mean) * scale
    if isinstance(beta, torch.Tensor):
        b = b + beta.detach().double()
    w = weight.detach().double() * scale.reshape(-1, *([1] * (weight.dim() - 1)))
    return w.to(dtype), b.to(dtype)


def _tensor(module: nn.Module, name: str) -> torch.Tensor:
    t = getattr(module, name)
    assert isinstance(t, torch.Tensor)  # checked by _refusal
    return t


# -- finding the pairs ------------------------------------------------------------------------
def find_pairs(model: nn.Module) -> tuple[list[tuple[str, str]], dict[str, str]]:
    """``[(conv, batchnorm)]`` that fold, and ``{batchnorm: why not}`` for the others."""
    batchnorms = {name: m for name, m in model.named_modules() if type(m) in _PAIRS and name}
    if not batchnorms:
        return [], {}
    try:
        candidates, refused = _pairs_from_graph(model, batchnorms)
    except Exception as exc:  # any tracing failure: data-dependent control flow, unsupported ops, ...
        log.info("fold_batchnorm: the model does not trace (%s): pairs are read from nn.Sequential", _first_line(exc))
        candidates, refused = _pairs_from_sequentials(model, batchnorms)
    every_name = names_by_module(model)
    pairs = []
    for conv_name, bn_name in candidates:
        conv, bn = get_submodule(model, conv_name), batchnorms[bn_name]
        why = _refusal(conv, bn, every_name)
        if why is None:
            pairs.append((conv_name, bn_name))
        else:
            refused[bn_name] = why
    return pairs, refused


def _refusal(conv: nn.Module, bn: nn.Module, every_name: dict[int, list[str]]) -> str | None:
    """Why ``bn`` cannot fold into ``conv`` (types, channels, statistics, sharing), or None."""
    if type(conv) is not _PAIRS[type(bn)]:
        return f"it follows a {type(conv).__name__}, not a {_PAIRS[type(bn)].__name__}"
    if getattr(bn, "running_mean", None) is None or getattr(bn, "running_var", None) is None:
        return "it has no running statistics (track_running_stats=False): it normalizes by each batch"
    if int(getattr(bn, "num_features", -1)) != int(getattr(conv, "out_channels", -2)):
        return "its channels are not the convolution's output channels"
    for name in ("running_mean", "running_var", "weight", "bias"):
        t = getattr(bn, name, None)
        if isinstance(t, torch.Tensor) and t.device.type == "meta":
            return "its tensors are not in memory (a model read lazily)"
    weight = getattr(conv, "weight", None)
    if not isinstance(weight, torch.Tensor) or weight.device.type == "meta" or not weight.is_floating_point():
        return "the convolution's weight is not a float tensor in memory"
    if len(every_name.get(id(conv), [])) > 1 or len(every_name.get(id(bn), [])) > 1:
        return "the convolution or the BatchNorm is reachable under several names (shared)"
    return None


def _pairs_from_graph(
    model: nn.Module, batchnorms: dict[str, nn.Module]
) -> tuple[list[tuple[str, str]], dict[str, str]]:
    """Pairs read from the ``torch.fx`` graph: the BatchNorm's input is a convolution's output
    that nothing else reads, and each module is called once."""
    import torch.fx

    graph = torch.fx.symbolic_trace(model).graph
    modules = dict(model.named_modules())
    calls: dict[str, int] = {}
    read = set()  # modules whose tensors the forward reads directly (self.conv.weight)
    for node in graph.nodes:
        if node.op == "call_module":
            calls[str(node.target)] = calls.get(str(node.target), 0) + 1
        elif node.op == "get_attr":
            read.add(str(node.target).rpartition(".")[0])
    pairs: list[tuple[str, str]] = []
    refused: dict[str, str] = {}
    seen_bn = set()
    for node in graph.nodes:
        target = str(node.target)
        if node.op != "call_module" or target not in batchnorms:
            continue
        seen_bn.add(target)
        source = node.args[0] if node.args else None
        if calls[target] > 1:
            refused[target] = f"it is called {calls[target]} times in the forward"
        elif not isinstance(source, torch.fx.Node) or source.op != "call_module":
            what = getattr(source, "target", source)
            refused[target] = f"its input comes from {getattr(what, '__name__', what)}, not a convolution"
        elif type(modules.get(str(source.target))) not in _PAIRS.values():
            refused[target] = f"its input comes from {str(source.target)!r}, not a convolution"
        elif len(source.users) != 1:
            refused[target] = f"the output of {str(source.target)!r} is also used elsewhere"
        elif calls[str(source.target)] > 1:
            refused[target] = f"{str(source.target)!r} is called {calls[str(source.target)]} times in the forward"
        elif str(source.target) in read or target in read:
            refused[target] = "the forward reads its or the convolution's tensors directly"
        else:
            pairs.append((str(source.target), target))
    for name in batchnorms:
        if name not in seen_bn:
            refused[name] = "the forward does not call it"
    return pairs, refused


def _pairs_from_sequentials(
    model: nn.Module, batchnorms: dict[str, nn.Module]
) -> tuple[list[tuple[str, str]], dict[str, str]]:
    """Pairs of adjacent children ``(conv, batchnorm)`` of a plain ``nn.Sequential`` (which feeds
    each child's output to the next and to nothing else)."""
    pairs: list[tuple[str, str]] = []
    placed = set()
    for name, module in model.named_modules():
        if type(module) is not nn.Sequential:
            continue
        children = list(module.named_children())
        for (conv_key, conv), (bn_key, _) in itertools.pairwise(children):
            bn_name = f"{name}.{bn_key}" if name else bn_key
            if bn_name in batchnorms and type(conv) in _PAIRS.values():
                pairs.append((f"{name}.{conv_key}" if name else conv_key, bn_name))
                placed.add(bn_name)
    why = "the model does not trace, and it does not follow a convolution in an nn.Sequential"
    return pairs, {bn: why for bn in batchnorms if bn not in placed}


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"


# -- the file -------------------------------------------------------------------------------------
def folded_records(model: nn.Module) -> list[dict[str, Any]]:
    """``[{"name", "type", "into"}]`` of every folded BatchNorm in ``model``: the file's ``folded_batchnorm``."""
    return [
        {"name": name, "type": m.batchnorm_type, "into": m.into}
        for name, m in model.named_modules()
        if isinstance(m, FoldedBatchNorm)
    ]


def restore_folded(model: nn.Module, records: list[dict[str, Any]], path: str) -> None:
    """Replace each BatchNorm the file lists as folded by its identity, and give the convolution it
    went into a bias when it has none (folding made one), in the float ``model`` (changed in place)
    before its quantized layers are built."""
    for record in records:
        name, into = str(record["name"]), str(record["into"])
        try:
            conv = get_submodule(model, into)
        except AttributeError:
            raise QuantizedFileError(
                f"{path}: convolution {into!r}, which BatchNorm {name!r} was folded into, is not in the model"
            ) from None
        weight = getattr(conv, "weight", None)
        if getattr(conv, "bias", 0) is None and isinstance(weight, torch.Tensor):
            bias = torch.empty(weight.shape[0], dtype=weight.dtype, device=weight.device)
            conv.register_parameter("bias", nn.Parameter(bias, requires_grad=False))
        try:
            bn = get_submodule(model, name)
        except AttributeError:
            raise QuantizedFileError(
                f"{path}: folded BatchNorm {name!r} is not in the model (the file's folded_batchnorm)"
            ) from None
        if type(bn).__name__ != record["type"] and not isinstance(bn, FoldedBatchNorm):
            raise QuantizedFileError(
                f"{path}: folded BatchNorm {name!r} is a {type(bn).__name__} in the model, {record['type']} in the file"
            )
        set_submodule(model, name, FoldedBatchNorm(str(record["type"]), into))
