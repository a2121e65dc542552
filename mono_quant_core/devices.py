"""Which device a run computes on (``QuantConfig.device``), decided once when the run starts.

``auto`` is the first CUDA device when this PyTorch sees one, else the CPU; ``cuda`` / ``cuda:N``
without such a device is a ConfigError that says what is there.  The model's weights go to the
device (a model built without its weights reads each layer straight onto it), calibration,
GPTQ/HQQ, bias correction and rounding run there, and the saved file is the same whatever the
device: tensors are written from CPU copies.
"""

from __future__ import annotations

import torch

from .errors import ConfigError


def available_devices(cuda_count: int | None = None) -> list[str]:
    """``["cpu", "cuda:0", …]``: what ``QuantConfig.device`` can name on this machine."""
    count = _cuda_count() if cuda_count is None else cuda_count
    return ["cpu", *(f"cuda:{i}" for i in range(count))]


def resolve_device(name: str, cuda_count: int | None = None) -> torch.device:
    """The ``torch.device`` for ``QuantConfig.device`` ``name`` (``cuda_count``: CUDA devices
    present, found out from torch when None)."""
    count = _cuda_count() if cuda_count is None else cuda_count
    if name == "auto":
        return torch.device("cuda:0" if count else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    index = int(name.partition(":")[2] or 0)
    if not count:
        raise ConfigError(
            f"device: {name!r} needs a CUDA GPU, and this PyTorch ({torch.__version__}) sees none "
            "(torch.cuda.is_available() is False); use device 'auto' or 'cpu'",
            key="device",
        )
    if index >= count:
        raise ConfigError(
            f"device: {name!r} is not here: this machine has {count} CUDA device(s), "
            f"{', '.join(available_devices(count)[1:])}",
            key="device",
        )
    return torch.device(f"cuda:{index}")


def _cuda_count() -> int:
    return torch.cuda.device_count() if torch.cuda.is_available() else 0
