"""Models larger than memory: built without their float weights, which are read when used.

``open_model(..., lazy=True)`` builds the script's model with every parameter on the ``meta``
device (:func:`params_on_meta`: storage is never allocated, so building a 7B-class model takes
seconds and no memory; buffers are built as the script builds them, so non-persistent ones such
as rotary tables or position ids stay real), then loads only the checkpoint's buffers.  The
model gets a :class:`LazyWeights` (``lazy_weights(model)``) that knows, for each parameter, its
tensor in the (memory-mapped, possibly sharded) checkpoint, and two ways to use them:

* **streaming**: a forward pre-hook on every module that owns parameters reads them just
  before the module runs and a forward hook drops them right after, so the lazy model (and
  every shallow clone of it: the hooks are copied) runs like the float model with one
  module's weights in memory at a time.  Dry runs, calibration, validation's float reference
  and a task metric all run this way;
* **onloading** (:meth:`LazyWeights.onloaded`): a layer's whole subtree in memory while it is
  quantized, released after; and :meth:`LazyWeights.materialize` for what stays float in the
  quantized model (in the dtype the script declares, as the in-memory path loads it).

Weights tied by identity in the script (an embedding shared with an output head) are read once
per use and stay tied in the quantized model.  A model whose script cannot be built this way
(its ``__init__`` reads a weight's values) or whose checkpoint lacks some parameter falls back
to the in-memory path; the caller logs why.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from .checkpoint_source import CheckpointEntry, CheckpointSource
from .page_release import trim_heap

log = logging.getLogger("mono_quant_core")

#: The attribute of a lazily built model (and its shallow clones) that holds its LazyWeights.
LAZY_ATTR = "_mono_quant_lazy"
#: Marks the hooks streaming installs, so they can be found on clones and removed.
STREAM_MARK = "_mono_quant_stream"


@contextlib.contextmanager
def params_on_meta() -> Iterator[None]:
    """Inside: every ``nn.Parameter`` a module registers is moved to the ``meta`` device.

    The tensor a constructor passes (``torch.empty(out, in)``) is allocated but never written,
    so its pages are never touched; ``reset_parameters`` then runs on the meta copy, which costs
    nothing.  Not thread-safe: it patches ``nn.Module.register_parameter`` while the model is
    built (the loader builds one model at a time).
    """
    original = nn.Module.register_parameter

    def register(module: nn.Module, name: str, param: nn.Parameter | None) -> None:
        original(module, name, param)
        held = module._parameters.get(name)
        if held is not None and held.device.type != "meta":
            module._parameters[name] = type(held)(held.to("meta"), requires_grad=held.requires_grad)

    nn.Module.register_parameter = register  # type: ignore[method-assign,assignment]
    try:
        yield
    finally:
        nn.Module.register_parameter = original  # type: ignore[method-assign]


def lazy_weights(model: nn.Module) -> LazyWeights | None:
    """The LazyWeights of a lazily built model (or of a shallow clone of one), else None."""
    found = model.__dict__.get(LAZY_ATTR)
    return found if isinstance(found, LazyWeights) else None


def meta_parameters(model: nn.Module) -> list[str]:
    """Names of the parameters of ``model`` that have no storage (``meta``)."""
    return [n for n, p in model.named_parameters(remove_duplicate=False) if p.device.type == "meta"]


class LazyWeights:
    """Where each parameter of a lazily built model lies in its checkpoint, and how to read it."""

    def __init__(self, source: CheckpointSource, entry: CheckpointEntry, model: nn.Module, names: dict[str, str]):
        """``names``: model parameter name -> checkpoint tensor name (every meta parameter of
        ``model`` must be there; tied parameters under each of their names)."""
        self.source = source
        self.entry = entry
        self.names = names
        self.bytes_read = 0  # checkpoint bytes read so far (a test counts them)
        #: Where read weights go (a run on a GPU sets it for its duration: QuantConfig.device).
        self.device = torch.device("cpu")
        self._prefix: dict[int, str] = {}
        for prefix, module in model.named_modules(remove_duplicate=False):
            self._prefix.setdefault(id(module), f"{prefix}." if prefix else "")

    # -- reading ----------------------------------------------------------------------------
    def read(self, names: list[str]) -> dict[str, torch.Tensor]:
        """The checkpoint tensors of model parameters ``names``, each read once, owned (no mapping kept).

        A reader whose tensors are views of a mapped file (a ``.pt`` checkpoint) has them copied:
        those pages are released after each chunk and are not the tensor's to keep."""
        wanted = list(dict.fromkeys(self.names[n] for n in names))
        out: dict[str, torch.Tensor] = {}
        for chunk in self.source.read(self.entry, wanted):
            for key, t in chunk.items():
                self.bytes_read += t.numel() * t.element_size()
                out[key] = (t if self.source.owned else torch.empty_like(t).copy_(t)).to(self.device)
        return {n: out[self.names[n]] for n in names}

    def _fill(self, module: nn.Module, prefix: str, recurse: bool, memo: dict[str, torch.Tensor]) -> list:
        """Put real tensors in place of the meta parameters of ``module`` (and its subtree with
        ``recurse``); returns what to put back to release them."""
        holders = module.named_modules(prefix=prefix.rstrip("."), remove_duplicate=False) if recurse else []
        owners = [(m, f"{p}." if p else "") for p, m in holders] if recurse else [(module, prefix)]
        wanted = [
            (m, name, p, f"{where}{name}")
            for m, where in owners
            for name, p in m._parameters.items()
            if p is not None and p.device.type == "meta"
        ]
        if not wanted:
            return []
        missing = [full for *_, full in wanted if full not in self.names]
        if missing:
            raise RuntimeError(f"lazy model: no checkpoint tensor for {', '.join(missing[:5])}")
        todo = [full for *_, full in wanted if self.names[full] not in memo]
        if todo:
            for full, t in self.read(todo).items():
                memo.setdefault(self.names[full], t)
        restore = []
        for m, name, p, full in wanted:
            t = memo[self.names[full]]
            if t.dtype != p.dtype:  # as load_state_dict copies into the declared dtype
                t = memo.setdefault(f"{self.names[full]}:{p.dtype}", t.to(p.dtype))
            m._parameters[name] = nn.Parameter(t, requires_grad=p.requires_grad)
            restore.append((m, name, p))
        return restore

    @staticmethod
    def _release(restore: list) -> None:
        for m, name, p in restore:
            m._parameters[name] = p
        if restore:
            trim_heap()

    @contextlib.contextmanager
    def onloaded(self, module: nn.Module, prefix: str) -> Iterator[None]:
        """Inside: ``module`` (at ``prefix`` in the model) and its subtree hold their float weights."""
        restore = self._fill(module, prefix, recurse=True, memo={})
        try:
            yield
        finally:
            self._release(restore)

    def materialize(self, model: nn.Module) -> None:
        """Give every meta parameter of ``model`` (this lazy model or a clone) its checkpoint
        tensor for good, tied parameters one tensor; then streaming is switched off on it."""
        memo: dict[str, torch.Tensor] = {}
        self._fill(model, "", recurse=True, memo=memo)
        stop_streaming(model)
        model.__dict__.pop(LAZY_ATTR, None)

    @contextlib.contextmanager
    def reading_to(self, device: torch.device) -> Iterator[None]:
        """Inside: weights are read onto ``device``."""
        before, self.device = self.device, device
        try:
            yield
        finally:
            self.device = before

    # -- streaming -------------------------------------------------------------------------------
    def stream(self, model: nn.Module) -> None:
        """Hooks on every module of ``model`` that owns parameters: read them before its forward,
        drop them after (also when the forward raises)."""
        for module in model.modules():
            if not any(p is not None and p.device.type == "meta" for p in module._parameters.values()):
                continue
            prefix = self._prefix.get(id(module), "")
            held: list[list] = []

            def before(m: nn.Module, _args: Any, prefix: str = prefix, held: list[list] = held) -> None:
                held.append(self._fill(m, prefix, recurse=False, memo={}))

            def after(_m: nn.Module, _args: Any, _out: Any, held: list[list] = held) -> None:
                if held:
                    self._release(held.pop())

            setattr(before, STREAM_MARK, True)
            setattr(after, STREAM_MARK, True)
            module.register_forward_pre_hook(before)
            module.register_forward_hook(after, always_call=True)


def stop_streaming(model: nn.Module) -> None:
    """Remove the streaming hooks from every module of ``model`` (a clone's are its own copies)."""
    for module in model.modules():
        for hooks in (module._forward_pre_hooks, module._forward_hooks):
            for key in [k for k, h in hooks.items() if getattr(h, STREAM_MARK, False)]:
                del hooks[key]
                module._forward_hooks_always_called.pop(key, None)


def declared_bytes(model: nn.Module) -> int:
    """Bytes of every parameter and buffer as the model declares them, meta ones included,
    each tensor object counted once (what the float model takes in memory)."""
    seen: set[int] = set()
    total = 0
    for t in model.state_dict(keep_vars=True).values():
        if isinstance(t, torch.Tensor) and id(t) not in seen:
            seen.add(id(t))
            total += t.numel() * t.element_size()
    return total
