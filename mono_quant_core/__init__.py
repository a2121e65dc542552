"""mono_quant_core: post-training quantization of PyTorch models (torch + safetensors, no Qt).

The public names are loaded lazily (PEP 562) so that ``import mono_quant_core``
and ``mono_quant_core.config`` stay cheap: the application shows its window
before torch is imported.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_EXPORTS = {
    "QuantConfig": "config",
    "Cancelled": "errors",
    "MonoQuantError": "errors",
    "ConfigError": "errors",
    "ScriptError": "errors",
    "AmbiguousEntryError": "errors",
    "CheckpointError": "errors",
    "QuantizedCheckpointError": "errors",
    "CalibrationError": "errors",
    "QuantizedFileError": "errors",
    "ContentHashError": "errors",
    "ValidationFailed": "errors",
    "CancelToken": "progress",
    "QuantReport": "report",
    "LayerReport": "report",
    "SkippedLayer": "report",
    "quantize": "quantizer",
    "QuantResult": "quantizer",
    "select_layers": "selection",
    "module_table": "selection",
    "load_model": "loading",
    "open_model": "loading",
    "list_entries": "loading",
    "load_calibration": "loading",
    "preview_calibration": "loading",
    "save_quantized": "serialization",
    "load_quantized": "serialization",
    "read_metadata": "serialization",
    "dequantize": "serialization",
}

__all__ = [*sorted(_EXPORTS), "__version__"]


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'mono_quant_core' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
