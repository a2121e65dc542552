"""The tensors a file holds: the model's state dict, each storage once."""

from __future__ import annotations

import torch
from torch import nn

from ..errors import QuantizedFileError


def file_tensors(model: nn.Module) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """(contiguous CPU tensors by state-dict name, aliases: dropped name -> kept name).

    A tensor reached under two names (tied weights) is stored once; safetensors
    refuses shared storage, and the alias lets loading restore the tie.
    """
    tensors: dict[str, torch.Tensor] = {}
    aliases: dict[str, str] = {}
    seen: dict[tuple, str] = {}
    for name, t in model.state_dict().items():
        if not isinstance(t, torch.Tensor):
            raise QuantizedFileError(
                f"{name}: the state dict holds a {type(t).__name__}, not a tensor; only tensors can be stored"
            )
        if t.device.type == "meta":
            raise QuantizedFileError(f"{name}: the tensor has no data (meta device)")
        if t.layout != torch.strided:
            t = t.to_dense()
        if t.numel():
            ident = (t.device, t.untyped_storage().data_ptr(), t.storage_offset(), t.dtype, tuple(t.shape), t.stride())
            if ident in seen:
                aliases[name] = seen[ident]
                continue
            seen[ident] = name
        tensors[name] = t.detach().cpu().contiguous()
    return tensors, aliases
