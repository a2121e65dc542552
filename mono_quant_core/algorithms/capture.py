"""The inputs a layer sees when a model runs calibration samples (GPTQ's Hessian, bias correction)."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
from torch import nn

from ..batches import call_model, sample_name
from ..calibration.hooks import first_input
from ..modules.attention import Project, attention_forward, bind_call
from ..progress import CancelLike, check_cancel
from ..structure import get_submodule, model_device


def layer_inputs(
    model: nn.Module, name: str, samples: Sequence[Any], cancel: CancelLike | None = None
) -> Iterator[torch.Tensor]:
    """Each floating-point first input of layer ``name`` while ``model`` runs ``samples`` one by one.

    Runs in eval mode under ``torch.no_grad()``; a layer called several times in one forward pass
    yields every call's input.  The hook is removed and training flags are put back whatever
    happens.  A sample the model fails on raises CalibrationError naming the sample (and its file).
    """

    def first(args: tuple, kwargs: dict) -> list[torch.Tensor]:
        x = first_input(args, kwargs)
        return [] if x is None else [x.detach()]

    return _captured(model, name, samples, cancel, first)


def projection_inputs(
    model: nn.Module,
    name: str,
    projection: str,
    samples: Sequence[Any],
    project: Project,
    cancel: CancelLike | None = None,
) -> Iterator[torch.Tensor]:
    """The inputs projection ``projection`` (q_proj, k_proj, v_proj or out_proj) of attention
    ``name`` (an ``nn.MultiheadAttention`` of ``model``) sees while ``model`` runs ``samples``.

    Each call of the attention is replayed with ``project(name, x)`` as its projections, so the
    output projection's inputs can come from already quantized q/k/v projections (GPTQ's
    sequential rule inside one layer).  Same guarantees as :func:`layer_inputs`.
    """
    mha = get_submodule(model, name)

    def replay(args: tuple, kwargs: dict) -> list[torch.Tensor]:
        seen: list[torch.Tensor] = []

        def record(which: str, x: torch.Tensor) -> torch.Tensor:
            if which == projection:
                seen.append(x.detach())
            return project(which, x)

        attention_forward(mha, record, **bind_call(args, kwargs))
        return seen

    return _captured(model, name, samples, cancel, replay)


def _captured(
    model: nn.Module,
    name: str,
    samples: Sequence[Any],
    cancel: CancelLike | None,
    take: Callable[[tuple, dict], list[torch.Tensor]],
) -> Iterator[torch.Tensor]:
    """What ``take(args, kwargs)`` returns for each call of layer ``name`` while ``model`` runs
    ``samples`` one by one, yielded sample by sample."""
    module = get_submodule(model, name)
    seen: list[torch.Tensor] = []

    def hook(_module: nn.Module, args: tuple, kwargs: dict) -> None:
        seen.extend(take(args, kwargs))

    device = model_device(model)
    flags = [(m, m.training) for m in model.modules()]
    model.eval()
    handle = module.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        for i in range(len(samples)):
            check_cancel(cancel)
            with torch.no_grad():
                call_model(model, samples[i], device, sample_name(samples, i))
            batch, seen[:] = list(seen), []
            yield from batch
    finally:
        handle.remove()
        for m, flag in flags:
            m.training = flag
