"""SmoothQuant: move activation outliers into the weights (docs/quantization-math.md, "SmoothQuant").

A Linear layer computes ``x Wᵀ``; with per-input-channel factors ``s`` it computes the same as
``(x / s)(W·diag(s))ᵀ``.  Choosing ``s_j = max|X_j|^alpha / max|W_j|^(1−alpha)`` divides the outlier
channels of the input down and multiplies the matching weight columns up, so that both sides fit
an int8 grid better.  The factors ``1/s`` go where the graph allows:

* **folded**: into the module that produces the input (a LayerNorm's weight and bias, or a
  Linear's output rows and bias) when its output goes to the smoothed Linears and nowhere else
  (seen in a ``torch.fx`` trace); the Linears then share one ``s``;
* **stored**: otherwise the Linear keeps ``s`` and divides its input by it (a forward pre-hook on
  the smoothed float model, the ``input_smoothing`` buffer of the quantized twin).

The user's model is never modified: the smoothed model is a shallow clone whose changed modules
hold new tensors.  Before it is used, the smoothed model is checked to reproduce the float
model's outputs on the first calibration sample (a module that reads a weight outside its
forward, such as the fused fast path of ``nn.TransformerEncoderLayer``, would not); where it does
not, folding and then smoothing are given up, with a warning.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import torch
from torch import nn

from ..batches import call_model, sample_name
from ..calibration.hooks import first_input
from ..errors import CalibrationError
from ..modules.base import QuantizedModule
from ..modules.linear import QuantizedLinear
from ..outputs import flat_tensors
from ..progress import CancelLike, ProgressFn, check_cancel
from ..structure import get_submodule, model_device, names_by_module, shallow_clone

#: Smallest weight range and factor (as in the SmoothQuant reference implementation).
MIN_SCALE = 1e-5
#: The smoothed model must reproduce the float model's outputs this well (max |diff| relative to
#: the largest output): a wrong fold is off by the size of the outputs, rounding by about 1e-6.
CHECK_RTOL = 1e-3


class DivideInput:
    """A forward pre-hook that divides a Linear's input by the stored SmoothQuant factors."""

    def __init__(self, factors: torch.Tensor) -> None:
        self.factors = factors

    def __call__(self, module: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict] | None:
        if args:
            return (args[0] / self.factors, *args[1:]), kwargs
        if "input" in kwargs:
            return args, {**kwargs, "input": kwargs["input"] / self.factors}
        return None


@dataclass
class Smoothing:
    """The outcome of :func:`smooth`: the smoothed float model and where each layer's factors went."""

    #: The smoothed shallow clone of the user's model (or the model itself when nothing was smoothed).
    model: nn.Module
    #: ``{layer: s}`` (float32 [in_features]) of every smoothed layer.
    factors: dict[str, torch.Tensor] = field(default_factory=dict)
    alphas: dict[str, float] = field(default_factory=dict)
    #: ``{layer: producer}`` of the layers whose ``1/s`` is folded into the module before them.
    folded: dict[str, str] = field(default_factory=dict)
    #: What the report says of each smoothed layer: ``"folded into <producer>"`` or ``"input scale"``.
    where: dict[str, str] = field(default_factory=dict)
    #: What was given up and why, said for a user (the run's report warnings).
    warnings: list[str] = field(default_factory=list)

    def apply(self, name: str, qmodule: QuantizedModule) -> None:
        """Give the quantized twin of layer ``name`` its factors (the twin already holds ``W·diag(s)``)."""
        if name not in self.factors or not isinstance(qmodule, QuantizedLinear):
            return
        qmodule.set_smoothing(self.alphas[name], self.factors[name], self.folded.get(name))


# -- measuring ----------------------------------------------------------------------------------
def _input_ranges(
    model: nn.Module,
    layers: dict[str, nn.Linear],
    samples: Sequence[Any],
    progress: ProgressFn | None,
    cancel: CancelLike | None,
) -> tuple[dict[str, torch.Tensor], Any]:
    """``{layer: max |x_j|}`` over every sample and position, and the model's output on sample 0."""
    clone = shallow_clone(model).eval()
    ranges: dict[str, torch.Tensor] = {}

    def observer(name: str, in_features: int) -> Any:
        def hook(_module: nn.Module, args: tuple, kwargs: dict) -> None:
            x = first_input(args, kwargs)
            if x is None or x.numel() == 0 or x.shape[-1] != in_features:
                return
            m = x.detach().abs().reshape(-1, in_features).amax(0).float()
            ranges[name] = m if name not in ranges else torch.maximum(ranges[name], m)

        return hook

    handles = [
        get_submodule(clone, name).register_forward_pre_hook(observer(name, linear.in_features), with_kwargs=True)
        for name, linear in layers.items()
    ]
    first_output = None
    try:
        for i in range(len(samples)):
            check_cancel(cancel)
            output = _forward(clone, samples, i)
            if i == 0:
                first_output = output
            if progress is not None:
                progress(i + 1, len(samples), f"measuring activation ranges {i + 1}/{len(samples)}")
    finally:
        for handle in handles:
            handle.remove()
    for name, r in ranges.items():
        if not bool(torch.isfinite(r).all()):
            raise CalibrationError(f"{name}: its calibration inputs contain NaN or Inf")
    return ranges, first_output


def _forward(model: nn.Module, samples: Sequence[Any], i: int) -> Any:
    """``model`` on sample ``i`` under no_grad; an error names the sample (and its file)."""
    with torch.no_grad():
        return call_model(model, samples[i], model_device(model), sample_name(samples, i))


def smoothing_factors(act_max: torch.Tensor, weights: Sequence[torch.Tensor], alpha: float) -> torch.Tensor:
    """``s_j = max|X_j|^alpha / max|W_j|^(1−alpha)`` (float32), the weight range over all ``weights`` sharing the input.

    Ranges and factors are clamped to at least MIN_SCALE; a channel that never carried a value
    keeps ``s_j = 1`` (there is nothing to balance).
    """
    w_max = torch.stack([w.detach().abs().amax(0).float() for w in weights]).amax(0).clamp(min=MIN_SCALE)
    act = act_max.float().to(w_max.device)
    s = (act.pow(alpha) / w_max.pow(1.0 - alpha)).clamp(min=MIN_SCALE)
    return torch.where(act > 0, s, torch.ones_like(s))


# -- the graph ----------------------------------------------------------------------------------
def _producer_ok(module: nn.Module, width: int) -> bool:
    """Whether ``module`` can take ``1/s`` on its ``width`` outputs."""
    if type(module) is nn.LayerNorm:
        return module.elementwise_affine and tuple(module.normalized_shape) == (width,)
    return type(module) is nn.Linear and module.out_features == width


def _trace_roots(module: nn.Module, prefix: str) -> list[tuple[str, Any]]:
    """``(prefix, graph)`` of ``module`` traced by ``torch.fx``, or of its largest traceable parts."""
    import torch.fx

    try:
        return [(prefix, torch.fx.symbolic_trace(module).graph)]
    except Exception:  # any tracing failure: look inside
        pass
    found = []
    for name, child in module.named_children():
        if next(child.parameters(), None) is not None:
            found += _trace_roots(child, f"{prefix}{name}.")
    return found


def fold_targets(model: nn.Module, layers: dict[str, nn.Linear], alphas: dict[str, float]) -> dict[str, list[str]]:
    """``{producer: [smoothed Linears]}`` where the producer's output goes to those Linears and
    nowhere else, in a ``torch.fx`` trace of the model (or of a traceable part of it).

    Refused: modules reachable under several names, a Linear also called on another input,
    a weight read outside the module's call (``get_attr``), consumers with different alphas.
    """
    aliases = names_by_module(model)
    ids = {id(m): n for n, m in layers.items() if len(aliases[id(m)]) == 1}
    groups: dict[str, list[str]] = {}
    for prefix, graph in _trace_roots(model, ""):
        groups.update(_graph_groups(model, prefix, graph, ids, aliases, alphas))
    return groups


def _graph_groups(
    model: nn.Module,
    prefix: str,
    graph: Any,
    ids: dict[int, str],
    aliases: dict[int, list[str]],
    alphas: dict[str, float],
) -> dict[str, list[str]]:
    """The fold groups one traced graph shows (see :func:`fold_targets`)."""
    calls: dict[str, list[Any]] = {}  # module name -> its call nodes
    read_attrs: list[str] = []
    for node in graph.nodes:
        if node.op == "call_module":
            module = get_submodule(model, prefix + str(node.target))
            calls.setdefault(aliases[id(module)][0], []).append(node)
        elif node.op == "get_attr":
            read_attrs.append(prefix + str(node.target))
    owners = {name: {id(n) for n in nodes} for name, nodes in calls.items()}
    groups: dict[str, list[str]] = {}
    for producer, nodes in calls.items():
        module = get_submodule(model, producer)
        if len(aliases[id(module)]) != 1:
            continue
        users = [u for n in nodes for u in n.users]
        if not users or any(u.op != "call_module" for u in users) or _read(producer, read_attrs):
            continue
        consumers = {ids.get(id(get_submodule(model, prefix + str(u.target)))) for u in users}
        if None in consumers:
            continue
        names = sorted(c for c in consumers if c is not None)
        if not _producer_ok(module, cast(nn.Linear, get_submodule(model, names[0])).in_features):
            continue
        if len({alphas[c] for c in names}) != 1 or any(_read(c, read_attrs) for c in names):
            continue
        if all(_fed_by(u, owners[producer]) for u in users) and all(
            all(_fed_by(u, owners[producer]) for u in calls[c]) for c in names
        ):
            groups[producer] = names
    return groups


def _read(name: str, attrs: list[str]) -> bool:
    return any(a.startswith(f"{name}.") for a in attrs)


def _fed_by(call: Any, producer_nodes: set[int]) -> bool:
    """``call`` (a module call node) takes one producer output as its only argument."""
    return len(call.args) == 1 and not call.kwargs and id(call.args[0]) in producer_nodes


# -- building -----------------------------------------------------------------------------------
def _set_param(module: nn.Module, name: str, value: torch.Tensor) -> None:
    """A new Parameter (new tensor) in a module of the clone: the user's tensors are never written."""
    old = module._parameters[name]
    assert old is not None
    module._parameters[name] = nn.Parameter(value.to(old.dtype), requires_grad=old.requires_grad)


def _build(
    model: nn.Module,
    layers: dict[str, nn.Linear],
    alphas: dict[str, float],
    ranges: dict[str, torch.Tensor],
    groups: dict[str, list[str]],
) -> Smoothing:
    """The smoothed clone: columns of each Linear times ``s``, ``1/s`` folded or stored."""
    clone = shallow_clone(model).eval()
    out = Smoothing(model=clone)
    columns: dict[str, torch.Tensor] = {}  # layer -> s (its weight's columns are multiplied)
    rows: dict[str, torch.Tensor] = {}  # producer -> s (its outputs are divided)
    for producer, consumers in groups.items():
        seen = [c for c in consumers if c in ranges]
        if len(seen) != len(consumers):
            continue
        act = torch.stack([ranges[c] for c in consumers]).amax(0)
        s = smoothing_factors(act, [layers[c].weight for c in consumers], alphas[consumers[0]])
        rows[producer] = s
        for c in consumers:
            columns[c] = s
            out.folded[c] = producer
            out.where[c] = f"folded into {producer}"
    for name, linear in layers.items():
        if name in columns or name not in ranges:
            continue
        columns[name] = smoothing_factors(ranges[name], [linear.weight], alphas[name])
        out.where[name] = "input scale"
    for name in set(columns) | set(rows):
        module = get_submodule(clone, name)
        weight_p, bias_p = module._parameters["weight"], module._parameters.get("bias")
        assert weight_p is not None  # a Linear or an affine LayerNorm
        weight = weight_p.detach().float()
        bias = None if bias_p is None else bias_p.detach().float()
        if name in columns:
            weight = weight * columns[name].to(weight.device)
        if name in rows:
            s = rows[name].to(weight.device)
            weight = weight / (s if weight.dim() == 1 else s[:, None])  # LayerNorm [n], Linear [n, in]
            bias = None if bias is None else bias / s
        _set_param(module, "weight", weight)
        if bias is not None:
            _set_param(module, "bias", bias)
    for name, s in columns.items():
        out.factors[name] = s.contiguous()
        out.alphas[name] = alphas[name]
        if name not in out.folded:
            get_submodule(clone, name).register_forward_pre_hook(DivideInput(s), with_kwargs=True)
    return out


def _reproduces(smoothed: nn.Module, samples: Sequence[Any], expected: Any) -> bool:
    """Whether ``smoothed`` gives the float model's output on sample 0 (to CHECK_RTOL)."""
    got = flat_tensors(_forward(smoothed, samples, 0))
    ref = flat_tensors(expected)
    if len(got) != len(ref) or any(a.shape != b.shape for a, b in zip(got, ref, strict=True)):
        return False
    for a, b in zip(got, ref, strict=True):
        if not b.is_floating_point() or b.numel() == 0:
            if not torch.equal(a, b):
                return False
            continue
        scale = float(b.detach().abs().max())
        if not float((a.detach().double() - b.detach().double()).abs().max()) <= CHECK_RTOL * scale + 1e-12:
            return False
    return True


def smooth(
    model: nn.Module,
    alphas: dict[str, float],
    samples: Sequence[Any],
    progress: ProgressFn | None = None,
    cancel: CancelLike | None = None,
) -> Smoothing:
    """SmoothQuant on the Linear layers named in ``alphas`` (``{name: alpha}``); ``model`` is never modified.

    Measures each layer's per-input-channel ``max |x_j|`` on ``samples`` (``progress`` after each),
    computes the factors, and returns the smoothed shallow clone with where each layer's factors
    went.  Layers that are not exactly ``nn.Linear`` or see no floating-point input are left as
    they are (not in ``where``).
    """
    layers = {
        name: module
        for name in alphas
        if type(module := get_submodule(model, name)) is nn.Linear  # exact: subclasses may read .weight
    }
    if not layers or len(samples) == 0:
        return Smoothing(model=model)
    ranges, first_output = _input_ranges(model, layers, samples, progress, cancel)
    groups = fold_targets(model, layers, alphas)
    smoothing = _build(model, layers, alphas, ranges, groups)
    if groups and not _reproduces(smoothing.model, samples, first_output):
        smoothing = _build(model, layers, alphas, ranges, {})
        smoothing.warnings.append(
            "SmoothQuant: folding the factors into the layers before changed the model's outputs; "
            "every smoothed layer stores its input scale instead"
        )
    if smoothing.factors and not _reproduces(smoothing.model, samples, first_output):
        return Smoothing(
            model=model,
            warnings=[
                "SmoothQuant was not applied: the smoothed model did not reproduce the float model's "
                "outputs (a module reads a smoothed layer's weight outside its forward, such as the "
                "fused path of nn.TransformerEncoderLayer)"
            ],
        )
    unseen = [n for n in layers if n not in ranges]
    if unseen:
        smoothing.warnings.append(
            f"SmoothQuant: {', '.join(unseen[:8])} saw no floating-point input during calibration; not smoothed"
        )
    return smoothing
