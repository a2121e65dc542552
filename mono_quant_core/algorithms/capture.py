"""The inputs a layer sees when a model runs calibration samples (GPTQ's Hessian, bias correction)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch import nn

from ..batches import call_model, sample_name
from ..calibration.hooks import first_input
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
    module = get_submodule(model, name)
    seen: list[torch.Tensor] = []

    def hook(_module: nn.Module, args: tuple, kwargs: dict) -> None:
        x = first_input(args, kwargs)
        if x is not None:
            seen.append(x.detach())

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
