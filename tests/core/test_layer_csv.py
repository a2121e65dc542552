"""report_csv: the per-layer table as CSV (exact header, one row per layer, inf and None)."""

from __future__ import annotations

import csv
import io
import subprocess
import sys

from mono_quant_core import LayerReport, QuantReport, report_csv

HEADER = [
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
]


def rows(text: str) -> list[list[str]]:
    return list(csv.reader(io.StringIO(text)))


def test_header_and_rows():
    report = QuantReport(
        layers=[
            LayerReport(
                name="features.0",
                type="Conv2d",
                dtype="int8",
                scheme="symmetric",
                granularity="per-channel",
                mode="static",
                shape=[16, 1, 3, 3],
                weight_sqnr_db=41.25,
                output_sqnr_db=None,
                original_bytes=640,
                quantized_bytes=272,
                kernel="fbgemm",
                status="ok",
            ),
            LayerReport(name="fc", type="Linear", dtype="fp16", weight_sqnr_db=float("inf"), status="low-sqnr"),
        ]
    )
    table = rows(report_csv(report))
    header = table[0]
    assert header[: len(HEADER)] == HEADER
    assert {"mode", "group_size"} <= set(header[len(HEADER) :])  # the report's other per-layer fields follow
    assert len(table) == 3
    first = dict(zip(header, table[1], strict=True))
    assert [first[c] for c in HEADER] == [
        "features.0",
        "Conv2d",
        "int8",
        "symmetric",
        "per-channel",
        "16x1x3x3",
        "41.25",
        "",
        "640",
        "272",
        "fbgemm",
        "ok",
    ]
    assert (first["mode"], first["group_size"]) == ("static", "")
    second = dict(zip(header, table[2], strict=True))
    assert (second["weight_sqnr_db"], second["scheme"], second["shape"]) == ("inf", "", "")


def test_empty_report_is_a_header():
    assert rows(report_csv(QuantReport()))[0][: len(HEADER)] == HEADER
    assert len(rows(report_csv(QuantReport()))) == 1


def test_csv_does_not_import_torch():
    code = (
        "import sys, mono_quant_core\n"
        "mono_quant_core.report_csv(mono_quant_core.QuantReport())\n"
        "assert 'torch' not in sys.modules\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr
