"""mono_quant_core: post-training quantization of PyTorch models (torch + safetensors, no Qt).

The public names are loaded lazily (PEP 562) so that ``import mono_quant_core``
and ``mono_quant_core.config`` stay cheap: the application shows its window
before torch is imported.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the names __getattr__ loads, for type checkers ("X as X": re-exported)
    from .compare import LayerDelta as LayerDelta
    from .compare import ReportComparison as ReportComparison
    from .compare import compare_reports as compare_reports
    from .config import QuantConfig as QuantConfig
    from .devices import available_devices as available_devices
    from .errors import AmbiguousEntryError as AmbiguousEntryError
    from .errors import CalibrationError as CalibrationError
    from .errors import Cancelled as Cancelled
    from .errors import CheckpointError as CheckpointError
    from .errors import ConfigError as ConfigError
    from .errors import ContentHashError as ContentHashError
    from .errors import MetricError as MetricError
    from .errors import MonoQuantError as MonoQuantError
    from .errors import QuantizedCheckpointError as QuantizedCheckpointError
    from .errors import QuantizedFileError as QuantizedFileError
    from .errors import ScriptError as ScriptError
    from .errors import ValidationFailed as ValidationFailed
    from .histograms import Histogram as Histogram
    from .histograms import LayerHistograms as LayerHistograms
    from .histograms import layer_histograms as layer_histograms
    from .int8_graph import Int8Report as Int8Report
    from .int8_graph import optimize_int8 as optimize_int8
    from .layer_csv import report_csv as report_csv
    from .loading import list_entries as list_entries
    from .loading import load_calibration as load_calibration
    from .loading import load_model as load_model
    from .loading import open_model as open_model
    from .loading import preview_calibration as preview_calibration
    from .metrics import Metric as Metric
    from .metrics import load_metric as load_metric
    from .progress import CancelToken as CancelToken
    from .quantizer import QuantResult as QuantResult
    from .quantizer import quantize as quantize
    from .report import LayerReport as LayerReport
    from .report import QuantReport as QuantReport
    from .report import SkippedLayer as SkippedLayer
    from .selection import module_table as module_table
    from .selection import select_layers as select_layers
    from .sensitivity import LayerSensitivity as LayerSensitivity
    from .sensitivity import SensitivityReport as SensitivityReport
    from .sensitivity import analyze_sensitivity as analyze_sensitivity
    from .serialization import compressed_tensors_problems as compressed_tensors_problems
    from .serialization import load_quantized as load_quantized
    from .serialization import open_quantized as open_quantized
    from .serialization import read_metadata as read_metadata
    from .serialization import save_quantized as save_quantized
    from .serialization.dequantize import dequantize as dequantize

__version__ = "0.1.0"

_EXPORTS = {
    "QuantConfig": "config",
    "available_devices": "devices",
    "compare_reports": "compare",
    "ReportComparison": "compare",
    "LayerDelta": "compare",
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
    "MetricError": "errors",
    "CancelToken": "progress",
    "QuantReport": "report",
    "LayerReport": "report",
    "SkippedLayer": "report",
    "report_csv": "layer_csv",
    "layer_histograms": "histograms",
    "LayerHistograms": "histograms",
    "Histogram": "histograms",
    "quantize": "quantizer",
    "QuantResult": "quantizer",
    "select_layers": "selection",
    "module_table": "selection",
    "analyze_sensitivity": "sensitivity",
    "SensitivityReport": "sensitivity",
    "LayerSensitivity": "sensitivity",
    "load_model": "loading",
    "open_model": "loading",
    "list_entries": "loading",
    "load_calibration": "loading",
    "preview_calibration": "loading",
    "load_metric": "metrics",
    "Metric": "metrics",
    "save_quantized": "serialization",
    "compressed_tensors_problems": "serialization",
    "load_quantized": "serialization",
    "open_quantized": "serialization",
    "read_metadata": "serialization",
    "dequantize": "serialization",
    "optimize_int8": "int8_graph",
    "Int8Report": "int8_graph",
}

__all__ = [*sorted(_EXPORTS), "__version__"]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'mono_quant_core' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
