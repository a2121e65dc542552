"""The per-layer table of a run report as CSV: one row per quantized layer (torch-free).

The columns are :data:`LAYER_COLUMNS` (the fields of ``LayerReport``) and then
any other ``LayerReport`` field, in its declared order, so a field added to the
report reaches the file without a change here.  ``inf`` SQNR is written
``inf``, a value not measured is empty, a shape reads ``16x1x3x3``.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
from typing import Any

from .report import LayerReport, QuantReport

#: The first columns, in this order.
LAYER_COLUMNS = (
    "name",
    "type",
    "dtype",
    "scheme",
    "granularity",
    "shape",
    "weight_sqnr_db",
    "output_sqnr_db",
    "original_bytes",
    "quantized_bytes",
    "kernel",
    "status",
)


def layer_columns() -> list[str]:
    """:data:`LAYER_COLUMNS`, then every other ``LayerReport`` field (``mode``, ``group_size``, …)."""
    extra = [f.name for f in dataclasses.fields(LayerReport) if f.name not in LAYER_COLUMNS]
    return [*LAYER_COLUMNS, *extra]


def cell(value: Any) -> str:
    """One value as a CSV cell: None empty, floats in full (``inf``, ``-inf``, ``nan``), a shape ``AxB``."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return "nan" if math.isnan(value) else repr(value)
    if isinstance(value, (list, tuple)) and all(isinstance(v, int) for v in value):
        return "x".join(str(v) for v in value)
    if isinstance(value, (list, tuple, dict)):
        return json.dumps(value)
    return str(value)


def layer_rows(report: QuantReport) -> list[list[str]]:
    """The header, then one row of cells per layer of ``report``."""
    columns = layer_columns()
    return [columns, *([cell(getattr(layer, c)) for c in columns] for layer in report.layers)]


def report_csv(report: QuantReport) -> str:
    """The per-layer table as CSV text (``\\r\\n`` line ends, as the ``csv`` module writes them)."""
    out = io.StringIO()
    csv.writer(out).writerows(layer_rows(report))
    return out.getvalue()
