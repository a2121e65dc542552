"""Block by block through a model built without its weights (sequential onloading).

Static calibration, GPTQ and bias correction need a layer's inputs while calibration samples run
through the model.  On a lazily built model (``open_model(lazy=True)``) running the whole model
per sample would read every float weight once per sample, and GPTQ, which captures each layer's
inputs anew, once per sample *per layer*.  When the model is a chain of repeated blocks (an
``nn.ModuleList`` of same-typed modules, as every transformer and most CNN scripts have), the
work runs block by block instead, as llm-compressor's sequential pipeline does:

1. the inputs of block ``i`` are captured for every sample: the model runs with blocks
   ``0 … i-1`` answered from their recorded outputs (:class:`_Answer`, nothing is read for them)
   and block ``i`` stops the pass (:class:`_Capture`);
2. block ``i`` is read from the checkpoint, run (calibrated, or its layers solved and quantized)
   on those inputs, its outputs recorded, and released.

So the float model is never held: one block's weights at a time, plus the blocks' outputs for
the calibration samples.  In a *chain* (each block called with the previous block's output
first and the previous block's other arguments, as a transformers model's layers are) the next
block's inputs are made from the last one's outputs without running the model again, and only
the last block's outputs are kept (``samples × activation bytes``); otherwise every block's
(``samples × blocks × activation bytes``).  The layers outside the blocks (an embedding, a
head) run in one pass with every block answered from its outputs.

Whether a model can be split so is checked, not assumed (:func:`plan_blocks`): the first
sample runs through the whole model, each block must run exactly once and in order, and every
stage replayed from the recorded outputs must see exactly the inputs (and the model give
exactly the output) of that full pass.  Results equal the in-memory path's bit for bit:
every layer sees the same inputs, sample by sample, in the same order.  When a model does
not qualify the run streams the whole model per sample, as before, and the log says why.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import torch
from torch import nn
from torch.utils._pytree import tree_flatten, tree_map

from .batches import call_model, sample_name
from .errors import Cancelled
from .loading.lazy_model import LazyWeights
from .progress import CancelLike, check_cancel
from .structure import get_submodule, model_device, names_by_module

log = logging.getLogger("mono_quant_core")

#: The smallest chain worth splitting: below it the whole model is one block anyway.
MIN_BLOCKS = 2


class _Stop(BaseException):
    """Ends a forward pass at the block being captured (a BaseException, so that neither the
    model's own ``except Exception`` nor :func:`call_model` takes it for the model's error)."""


@dataclass(frozen=True)
class _Call:
    """One recorded call of a block: what :func:`call_model` passes as ``*args, **kwargs``."""

    args: tuple[Any, ...]
    kwargs: dict[str, Any]


class _StandIn(nn.Module):
    """Takes a module's place for one pass; attributes it lacks are the replaced module's (a
    forward that reads ``self.layers[0].attention_type`` or a tied weight still finds them)."""

    def __init__(self) -> None:
        super().__init__()
        self.__dict__["replaced"] = None

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            replaced = self.__dict__.get("replaced")
            if replaced is None:
                raise
            return getattr(replaced, name)


class _Answer(_StandIn):
    """Stands in for a finished block: returns its recorded output for the current sample."""

    def __init__(self) -> None:
        super().__init__()
        self.value: Any = None

    def forward(self, *_args: Any, **_kwargs: Any) -> Any:
        return self.value


class _Capture(_StandIn):
    """Stands in for the block whose inputs are wanted: records them and stops the pass."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: _Call | None = None

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        self.seen = _Call(*_detached((args, kwargs)))
        raise _Stop


def _detached(tree: Any) -> Any:
    return tree_map(lambda v: v.detach() if isinstance(v, torch.Tensor) else v, tree)


def _equal(a: Any, b: Any) -> bool:
    """Whether two nested structures of tensors and values are equal, exactly."""
    leaves_a, spec_a = tree_flatten(a)
    leaves_b, spec_b = tree_flatten(b)
    if spec_a != spec_b:
        return False
    for x, y in zip(leaves_a, leaves_b, strict=True):
        if isinstance(x, torch.Tensor) or isinstance(y, torch.Tensor):
            if not (isinstance(x, torch.Tensor) and isinstance(y, torch.Tensor)):
                return False
            if x.shape != y.shape or x.dtype != y.dtype or not torch.equal(x, y):
                return False
        elif x is not y and x != y:
            return False
    return True


def _hidden(output: Any) -> Any:
    """What a block hands the next one: its output, or the first element of a tuple/list output."""
    return output[0] if isinstance(output, (tuple, list)) and output else output


def _follows(before: Any, output: Any, args: tuple, kwargs: dict) -> bool:
    """Whether a block called with ``(args, kwargs)`` gets the previous block's output (the very
    object) first and the previous block's other arguments (the same objects) after."""
    if before is None or not args:
        return False
    prev_args, prev_kwargs = before
    if args[0] is not _hidden(output) or len(args) != len(prev_args) or list(kwargs) != list(prev_kwargs):
        return False
    return all(a is b for a, b in zip(args[1:], prev_args[1:], strict=True)) and all(
        kwargs[k] is prev_kwargs[k] for k in kwargs
    )


def _next_call(call: _Call, output: Any) -> _Call:
    """The next block's call in a chain: this block's output first, its other arguments after."""
    return _Call((_hidden(output), *call.args[1:]), call.kwargs)


@contextlib.contextmanager
def _swapped(model: nn.Module, names: Sequence[str], stand_ins: Sequence[nn.Module]) -> Iterator[None]:
    """Inside: the modules at ``names`` are replaced by ``stand_ins`` (put back whatever happens)."""
    parents = []
    for name, stand_in in zip(names, stand_ins, strict=True):
        parent_name, _, leaf = name.rpartition(".")
        parent = get_submodule(model, parent_name)
        parents.append((parent, leaf, parent._modules[leaf]))
        stand_in.__dict__["replaced"] = parent._modules[leaf]
        parent._modules[leaf] = stand_in
    try:
        yield
    finally:
        for parent, leaf, original in parents:
            parent._modules[leaf] = original


@dataclass
class BlockPlan:
    """How one model splits into blocks: the blocks' names in order and where each chosen layer is."""

    blocks: list[str]
    #: chosen layer -> (block index, its name inside the block)
    inside: dict[str, tuple[int, str]]
    #: chosen layers outside the blocks: run before the first block / after the last
    before: list[str] = field(default_factory=list)
    after: list[str] = field(default_factory=list)
    #: the modules with weights outside the blocks (outermost), and those of them that run once,
    #: before the first block: their output depends on the sample alone, so it is recorded once
    outside: list[str] = field(default_factory=list)
    early: list[str] = field(default_factory=list)
    #: each block's first argument is the previous block's output (its first element when a
    #: tuple), its other arguments the previous block's own: no stage needs re-running, and only
    #: the last finished block's outputs are kept
    chain: bool = False

    def block_of(self, name: str) -> int | None:
        found = self.inside.get(name)
        return None if found is None else found[0]


def outside_groups(model: nn.Module, blocks: Sequence[str]) -> list[str]:
    """The outermost modules with parameters that neither are nor hold a block."""
    found: list[str] = []

    def walk(module: nn.Module, prefix: str) -> None:
        for key, child in module._modules.items():
            if child is None:
                continue
            name = f"{prefix}{key}"
            if name in blocks:
                continue
            if any(b.startswith(f"{name}.") for b in blocks):
                walk(child, f"{name}.")
            elif any(True for _ in child.parameters()):
                found.append(name)

    walk(model, "")
    return found


def find_blocks(model: nn.Module, chosen: Sequence[str]) -> list[str] | None:
    """Names of the children of the ``nn.ModuleList``/``nn.Sequential`` of same-typed modules
    (at least :data:`MIN_BLOCKS`) that holds the most chosen layers; the outermost on a tie."""
    best: tuple[int, list[str]] | None = None
    for name, module in model.named_modules():
        if not isinstance(module, (nn.ModuleList, nn.Sequential)) or len(module) < MIN_BLOCKS:
            continue
        if len({type(child) for child in module}) != 1:
            continue
        kids = [f"{name}.{k}" if name else k for k in module._modules]
        count = sum(1 for c in chosen if any(c.startswith(f"{k}.") for k in kids))
        if count and (best is None or count > best[0]):
            best = (count, kids)
    return None if best is None else best[1]


class Staged:
    """Runs ``model`` on samples with its first blocks answered from recorded outputs (and the
    modules that run before the first block, once they ran for a sample)."""

    def __init__(
        self,
        model: nn.Module,
        plan: BlockPlan,
        samples: Sequence[Any],
        cancel: CancelLike | None,
        lazy: LazyWeights | None = None,
    ) -> None:
        self.model = model
        self.plan = plan
        self.blocks = plan.blocks
        self.samples = samples
        self.cancel = cancel
        self.lazy = lazy
        self.device = model_device(model)
        #: ``outputs[j][s]``: block j's output on sample s, once block j is finished
        self.outputs: list[list[Any]] = []
        #: ``early[s]``: the outputs of ``plan.early`` on sample s
        self.early: dict[int, list[Any]] = {}
        #: in a chain: the calls of the last finished block (its outputs are the next one's inputs)
        self._last_calls: list[_Call] | None = None

    def run(self, s: int, upto: int, answers: Sequence[Any] | None = None) -> Any:
        """Sample ``s`` through the model, blocks before ``upto`` answered (from ``answers`` if
        given, else from :attr:`outputs`); the inputs of block ``upto`` (a :class:`_Call`), or
        the model's output when ``upto`` is past the last block."""
        check_cancel(self.cancel)
        names: list[str] = []
        stand_ins: list[nn.Module] = []
        for j in range(upto):
            names.append(self.blocks[j])
            if answers is not None:
                value = answers[j]
            elif self.plan.chain:  # only the last block's output reaches past the blocks
                value = self.outputs[upto - 1][s]
            else:
                value = self.outputs[j][s]
            stand_ins.append(_answer(value))
        capture = _Capture()
        if upto < len(self.blocks):
            names.append(self.blocks[upto])
            stand_ins.append(capture)
        recorded: dict[str, Any] = {}
        handles = []
        if s in self.early:
            names += self.plan.early
            stand_ins += [_answer(v) for v in self.early[s]]
        else:
            for name in self.plan.early:
                module = get_submodule(self.model, name)
                handles.append(module.register_forward_hook(partial(_record, recorded, name)))
        try:
            with _swapped(self.model, names, stand_ins), torch.no_grad():
                try:
                    output = call_model(self.model, self.samples[s], self.device, sample_name(self.samples, s))
                except _Stop:
                    return capture.seen
        finally:
            for handle in handles:
                handle.remove()
            if handles and len(recorded) == len(self.plan.early):
                self.early[s] = [_detached(recorded[n]) for n in self.plan.early]
        if upto < len(self.blocks):  # the block was never reached: plan_blocks checks it is
            raise RuntimeError(f"{self.blocks[upto]}: not called on {sample_name(self.samples, s)}")
        return output

    def outside_held(self) -> contextlib.ExitStack:
        """The weights outside the blocks, read once for a pass over every sample."""
        stack = contextlib.ExitStack()
        for name in self.plan.outside:
            stack.enter_context(onloaded(self.lazy, self.model, name))
        return stack

    def capture(self, i: int) -> list[_Call]:
        """The inputs of block ``i`` for every sample."""
        if self.plan.chain and i > 0 and self._last_calls is not None and len(self.outputs) == i:
            return [_next_call(c, o) for c, o in zip(self._last_calls, self.outputs[i - 1], strict=True)]
        if all(s in self.early for s in range(len(self.samples))):
            return [self.run(s, i) for s in range(len(self.samples))]
        with self.outside_held():
            return [self.run(s, i) for s in range(len(self.samples))]

    def run_outside(self) -> None:
        """Every sample once, every block answered: the layers after the blocks run (their
        observers see them); the model's outputs are dropped (an LLM's logits are large)."""
        with self.outside_held():
            for s in range(len(self.samples)):
                self.run(s, len(self.blocks))

    def finish(self, block: nn.Module, i: int, inputs: Sequence[_Call]) -> None:
        """Runs block ``i`` (``block``: its module, quantized or not) on its inputs and records
        its outputs; the block is done."""
        assert len(self.outputs) == i, "blocks are finished in order"
        self.outputs.append(run_block(block, inputs, self.samples, self.cancel))
        if self.plan.chain:  # the earlier blocks' outputs are never needed again
            self._last_calls = list(inputs)
            if i > 0:
                self.outputs[i - 1] = []


def _record(into: dict[str, Any], name: str, _module: nn.Module, _args: Any, output: Any) -> None:
    into[name] = output


def _answer(value: Any) -> _Answer:
    answer = _Answer()
    answer.value = value
    return answer


def run_block(block: nn.Module, inputs: Sequence[_Call], samples: Sequence[Any], cancel: CancelLike | None) -> list:
    """``block`` on each recorded call (errors name the sample)."""
    device = model_device(block)
    outputs = []
    with torch.no_grad():
        for s, call in enumerate(inputs):
            check_cancel(cancel)
            outputs.append(_detached(call_model(block, call, device, sample_name(samples, s))))
    return outputs


class Replay(nn.Module):
    """A block as a model whose sample ``s`` is the block's recorded call on calibration sample
    ``s``: the capture helpers (GPTQ, bias correction) run on it as on the whole model, with
    the layer's name inside it (``block.<name in the block>``)."""

    def __init__(self, block: nn.Module, inputs: Sequence[_Call]) -> None:
        super().__init__()
        self.block = block
        self.calls = list(inputs)

    def forward(self, s: int) -> Any:
        call = self.calls[s]
        return self.block(*call.args, **call.kwargs)


class Finale(nn.Module):
    """The whole model as a model whose sample ``s`` runs calibration sample ``s`` with every
    block answered from its outputs: the layers after the blocks see their inputs (``model.<name>``)."""

    def __init__(self, chain: Staged) -> None:
        super().__init__()
        self.model = chain.model
        self.chain = chain

    def forward(self, s: int) -> Any:
        return self.chain.run(s, len(self.chain.blocks))


class ReplaySamples(Sequence[int]):
    """Sample indices for a :class:`Replay`, named as the calibration samples they stand for."""

    def __init__(self, samples: Sequence[Any]) -> None:
        self.n = len(samples)
        self.files = getattr(samples, "files", None)

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: Any) -> Any:
        if isinstance(i, slice):
            return list(range(self.n))[i]
        if not 0 <= i < self.n:
            raise IndexError(i)
        return i


def plan_blocks(
    model: nn.Module, chosen: Sequence[str], samples: Sequence[Any], cancel: CancelLike | None = None
) -> BlockPlan | None:
    """How ``model`` (float, eval) splits into blocks for ``chosen`` layers, checked on the first
    sample; None (and the log says why) when it does not."""
    if len(samples) == 0:
        return None
    blocks = find_blocks(model, chosen)
    if blocks is None:
        log.info("block by block: no repeated blocks (an nn.ModuleList of same-typed modules) hold the layers")
        return None
    aliases = names_by_module(model)
    if any(len(aliases[id(get_submodule(model, b))]) > 1 for b in blocks):
        log.info("block by block: a block is reachable under several names; running the whole model per sample")
        return None
    reason = _check_order(model, blocks, chosen, samples)
    if isinstance(reason, str):
        log.info("block by block: %s; running the whole model per sample", reason)
        return None
    plan, calls, outputs, final = reason
    staged = Staged(model, plan, samples, cancel)
    for i in range(len(blocks) + 1):  # every stage replayed from the recorded outputs sees what the full pass saw
        try:
            seen = staged.run(0, i, answers=outputs)
        except (Cancelled, KeyboardInterrupt):
            raise
        except Exception as exc:  # e.g. the forward reads an attribute of a block it cannot have
            where = blocks[i] if i < len(blocks) else "the model's output"
            log.info("block by block: replaying the stages up to %s failed (%s); not splitting", where, exc)
            return None
        want = calls[i] if i < len(blocks) else final
        if not _equal(seen if i == len(blocks) else (seen.args, seen.kwargs), want):
            where = blocks[i] if i < len(blocks) else "the model's output"
            log.info(
                "block by block: %s differs when the blocks before it are replayed; running the whole model", where
            )
            return None
    if plan.chain:  # every block answered with the last one's output: the layers after see the same
        last = [outputs[-1]] * len(blocks)
        plan.chain = _equal(staged.run(0, len(blocks), answers=last), final)
    return plan


def _check_order(
    model: nn.Module, blocks: list[str], chosen: Sequence[str], samples: Sequence[Any]
) -> str | tuple[BlockPlan, list, list, Any]:
    """The first sample through the whole model with hooks: each block once and in order, the
    chosen layers outside them wholly before or after; the plan and what each block saw, or why not."""
    order: list[tuple[str, str]] = []  # ("block", name) / ("layer", name) in call order
    calls: list[Any] = [None] * len(blocks)
    outputs: list[Any] = [None] * len(blocks)
    handles = []
    index = {b: i for i, b in enumerate(blocks)}

    chained = [True]
    previous: list[Any] = [None, None]  # the last block's raw (args, kwargs) and output

    def on_block(i: int) -> tuple[Any, Any]:
        def before(_m: nn.Module, args: tuple, kwargs: dict) -> None:
            order.append(("block", blocks[i]))
            calls[i] = _detached((args, kwargs))
            if i > 0:
                chained[0] = chained[0] and _follows(previous[0], previous[1], args, kwargs)
            previous[0] = (args, kwargs)

        def after(_m: nn.Module, _args: tuple, _kwargs: dict, out: Any) -> None:
            outputs[i] = _detached(out)
            previous[1] = out

        return before, after

    groups = outside_groups(model, blocks)
    inside: dict[str, tuple[int, str]] = {}
    outside = []
    for name in chosen:
        block = next((b for b in blocks if name.startswith(f"{b}.")), None)
        if block is not None:
            inside[name] = (index[block], name[len(block) + 1 :])
        else:
            outside.append(name)
    try:
        for i, b in enumerate(blocks):
            before, after = on_block(i)
            module = get_submodule(model, b)
            handles.append(module.register_forward_pre_hook(before, with_kwargs=True))
            handles.append(module.register_forward_hook(after, with_kwargs=True))
        for kind, names in (("layer", outside), ("group", groups)):
            for name in names:

                def seen(_m: nn.Module, _args: tuple, name: str = name, kind: str = kind) -> None:
                    order.append((kind, name))

                handles.append(get_submodule(model, name).register_forward_pre_hook(seen))
        with torch.no_grad():
            final = _detached(call_model(model, samples[0], model_device(model), sample_name(samples, 0)))
    finally:
        for handle in handles:
            handle.remove()
    block_calls = [name for kind, name in order if kind == "block"]
    if block_calls != blocks:
        return "the blocks do not run exactly once each, in order"
    first = next(k for k, (kind, _) in enumerate(order) if kind == "block")
    last = max(k for k, (kind, _) in enumerate(order) if kind == "block")
    before_names = {n for kind, n in order[:first] if kind == "layer"}
    after_names = {n for kind, n in order[last:] if kind == "layer"}
    between = {n for kind, n in order[first:last] if kind == "layer"}
    if between:
        return f"{sorted(between)[0]} runs between the blocks"
    if before_names & after_names:
        return f"{sorted(before_names & after_names)[0]} runs both before and after the blocks"
    group_calls = [n for kind, n in order if kind == "group"]
    early_groups = {n for kind, n in order[:first] if kind == "group"}
    plan = BlockPlan(
        blocks,
        inside,
        before=[n for n in outside if n in before_names],
        after=[n for n in outside if n not in before_names],
        outside=groups,
        early=[n for n in groups if n in early_groups and group_calls.count(n) == 1],
        chain=chained[0],
    )
    return plan, calls, outputs, final


def onloaded(lazy: LazyWeights | None, model: nn.Module, name: str) -> contextlib.AbstractContextManager[None]:
    """Block ``name`` of ``model`` holds its float weights inside (nothing to do for an eager model)."""
    if lazy is None:
        return contextlib.nullcontext()
    return lazy.onloaded(get_submodule(model, name), name)


#: Where a layer's inputs are captured: ``(model, the layer's name in it, its samples)``.
View = tuple[nn.Module, str, Sequence[Any]]


def in_order(plan: BlockPlan, chosen: Sequence[str]) -> bool:
    """Whether ``chosen`` (the order layers are built in) takes the layers before the blocks
    first, then block by block, then those after: so that block by block each layer's inputs
    come from the same part-quantized model as in the in-memory run."""
    rank = []
    for name in chosen:
        block = plan.block_of(name)
        rank.append(-1 if name in plan.before else len(plan.blocks) if block is None else block)
    return rank == sorted(rank)


class BlockViews:
    """The views GPTQ (on the part-quantized model) and bias correction (on the float model)
    capture a layer's inputs from, block by block; each chain advances only when asked."""

    def __init__(
        self,
        plan: BlockPlan,
        qmodel: nn.Module,
        reference: nn.Module,
        samples: Sequence[Any],
        cancel: CancelLike | None,
        lazy: LazyWeights | None,
        float_chain: Staged | None = None,
    ) -> None:
        self.plan = plan
        self.lazy = lazy
        self.samples = samples
        self.quantized = Staged(qmodel, plan, samples, cancel, lazy)
        self.float = float_chain or Staged(reference, plan, samples, cancel, lazy)
        self._inputs: dict[tuple[int, int], list[_Call]] = {}  # (chain, block) -> calls
        self._open: dict[int, tuple[int, contextlib.ExitStack]] = {}  # chain -> (block, its onloading)

    def _chain(self, which: int) -> Staged:
        return self.quantized if which == 0 else self.float

    def _advance(self, which: int, i: int) -> list[_Call]:
        """Chain ``which`` with blocks before ``i`` finished and block ``i`` read; its inputs."""
        chain = self._chain(which)
        while len(chain.outputs) < i:
            j = len(chain.outputs)
            calls = self._inputs.pop((which, j), None) or chain.capture(j)
            self._enter(which, j)
            chain.finish(get_submodule(chain.model, self.plan.blocks[j]), j, calls)
        if i == len(self.plan.blocks):  # the layers after the blocks: what is outside them is held
            held = self._open.get(which)
            if held is None or held[0] != i:
                if held is not None:
                    held[1].close()
                self._open[which] = (i, chain.outside_held())
            return []
        if (which, i) not in self._inputs:
            self._inputs[(which, i)] = chain.capture(i)
        self._enter(which, i)
        return self._inputs[(which, i)]

    def _enter(self, which: int, i: int) -> None:
        held = self._open.get(which)
        if held is not None and held[0] == i:
            return
        if held is not None:
            held[1].close()
        stack = contextlib.ExitStack()
        stack.enter_context(onloaded(self.lazy, self._chain(which).model, self.plan.blocks[i]))
        self._open[which] = (i, stack)

    def view(self, name: str, quantized: bool) -> View | None:
        """Where layer ``name`` (in a block) sees its inputs: a :class:`Replay` of its block; None
        for a layer outside the blocks (it runs in the whole model)."""
        which = 0 if quantized else 1
        if name in self.plan.after:  # every block finished and answered; the rest of the model runs
            self._advance(which, len(self.plan.blocks))
            return Finale(self._chain(which)), f"model.{name}", ReplaySamples(self.samples)
        found = self.plan.inside.get(name)
        if found is None:
            return None
        i, inner = found
        calls = self._advance(which, i)
        block = get_submodule(self._chain(which).model, self.plan.blocks[i])
        return Replay(block, calls), f"block.{inner}", ReplaySamples(self.samples)

    def close(self) -> None:
        """Release every block still held."""
        for _, stack in self._open.values():
            stack.close()
        self._open.clear()
        self._inputs.clear()
