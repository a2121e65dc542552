"""What ``mono-quant inspect FILE [--json]`` shows: a quantized file's metadata, layers and sizes."""

from __future__ import annotations

import os
from typing import Any

from .config import describe_algorithm
from .report import _decode_float, _encode, coverage_text, format_db, human_bytes

_METRIC_KEYS = (
    "output_sqnr_db",
    "load_test_passed",
    "weight_range_valid",
    "passed",
    "calibration_samples",
    "validation_samples",
    "elapsed_s",
    "warnings",
    "failures",
)
_LAYER_KEYS = (
    "name",
    "type",
    "dtype",
    "mode",
    "scheme",
    "granularity",
    "axis",
    "group_size",
    "shape",
    "weight_sqnr_db",
)


def _content_hash(meta: dict[str, Any], checked: int | None) -> dict[str, Any]:
    """``{"recorded", "tensors", "verified"}``: whether the file records hashes, and whether they were checked."""
    from .serialization.content_hash import FIELD

    recorded = meta.get(FIELD)
    return {
        "recorded": recorded is not None,
        "tensors": len(recorded["tensors"]) if recorded is not None else None,
        "verified": True if checked is not None else None,  # a mismatch raises instead
    }


def inspect_file(path: str | os.PathLike, verify: bool = False) -> dict[str, Any]:
    """Everything ``inspect`` shows, as a JSON-ready dict (``inf`` as the string ``"inf"``).

    ``verify`` reads every tensor and checks the content hash recorded in the
    file; a mismatch raises ``ContentHashError`` naming the file and the tensor.
    """
    from .serialization.read import output_files, read_summary, read_verified, resolve

    path = resolve(path)  # a sharded output's folder, shard or name: its index
    fmt, meta, tensors = read_summary(path)
    checked = read_verified(path)[2] if verify else None
    report = meta.get("report") or {}
    files = output_files(path)
    file_bytes = sum(os.path.getsize(f) for f in files)
    original = report.get("original_bytes")
    layer_output = {r.get("name"): r.get("output_sqnr_db") for r in report.get("layers", [])}
    layers = []
    for record in meta["layers"]:
        row = {k: record.get(k) for k in _LAYER_KEYS}
        row["output_sqnr_db"] = layer_output.get(record["name"])
        row["algorithm"] = record.get("algorithm") or "rtn"
        row["bias_corrected"] = bool(record.get("bias_corrected"))
        layers.append(row)
    return _encode(
        {
            "file": os.path.basename(path),
            "path": os.path.abspath(path),
            "format": fmt,
            "shards": [os.path.basename(f) for f in files[1:]],
            "format_version": meta["format_version"],
            "versions": meta.get("versions", {}),
            "source": meta.get("source", {}),
            "config": meta.get("config", {}),
            "calibration": meta.get("calibration", {}),
            "layers": layers,
            "skipped": meta.get("skipped", []),
            "algorithm": report.get("algorithm") or {"algorithm": "rtn"},
            "coverage": report.get("coverage") or {},
            "sizes": {
                "file_bytes": file_bytes,
                "original_bytes": original,
                "quantized_bytes": report.get("quantized_bytes"),
                "compression_ratio": report.get("compression_ratio"),
                "file_ratio": (original / file_bytes) if original and file_bytes else None,
                "tensors": len(tensors),
                "tied_tensors": len(meta.get("aliases", {})),
            },
            "metrics": {k: report.get(k) for k in _METRIC_KEYS},
            "content_hash": _content_hash(meta, checked),
        }
    )


def _ratio(x: float | None) -> str:
    return "—" if x is None else f"{x:.2f}×"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows, strict=False)]
    fmt = lambda row: "  " + "  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=False)).rstrip()  # noqa: E731
    return [fmt(header), fmt(["-" * w for w in widths])] + [fmt(r) for r in rows]


def _config_line(config: dict[str, Any]) -> str:
    overrides = len(config.get("layer_overrides") or {})
    more = [f"{overrides} layer override{'' if overrides == 1 else 's'}"] if overrides else []
    if config.get("dtype") in ("fp16", "bf16"):
        return ", ".join([f"{config['dtype']} cast", *more])
    parts = [config.get("dtype"), config.get("mode"), config.get("scheme"), config.get("granularity")]
    if config.get("granularity") == "per-group":
        parts.append(f"group size {config.get('group_size')}")
    if config.get("mode") == "static":
        parts.append(f"observer {config.get('observer')}")
    return ", ".join(str(p) for p in [*parts, *more] if p)


def _source_line(source: dict[str, Any]) -> str:
    text = source.get("script") or "(no script recorded)"
    if source.get("entry"):
        text += f", entry {source['entry']}"
    if source.get("entry_kwargs"):
        text += f" {source['entry_kwargs']}"
    if source.get("checkpoint"):
        sha = source.get("checkpoint_sha256") or ""
        text += f"; checkpoint {source['checkpoint']}" + (f" (sha256 {sha[:16]}…)" if sha else "")
    return text


def _hash_line(content_hash: dict[str, Any]) -> str:
    if not content_hash.get("recorded"):
        return "none recorded (a file written before mono-quant recorded hashes): cannot be verified"
    n = content_hash.get("tensors")
    if content_hash.get("verified"):
        return f"ok ({n} tensors)"
    return f"recorded ({n} tensors), not checked (--verify checks it)"


def format_inspect(info: dict[str, Any]) -> str:
    """The human-readable text of :func:`inspect_file`'s dict."""
    sizes, metrics, versions = info["sizes"], info["metrics"], info.get("versions", {})
    calib = info.get("calibration") or {}
    db = lambda v: format_db(_decode_float(v))  # noqa: E731
    yes_no = lambda v: "—" if v is None else ("yes" if v else "NO")  # noqa: E731
    shards = info.get("shards") or []
    in_shards = f", {len(shards)} shards" if shards else ""
    lines = [
        f"{info['file']}  ({info['format']}{in_shards}, mono-quant file format {info['format_version']})",
        f"written by    mono-quant {versions.get('mono_quant', '?')}, torch {versions.get('torch', '?')}",
        f"source        {_source_line(info.get('source') or {})}",
        f"config        {_config_line(info.get('config') or {})}",
    ]
    if calib.get("method"):
        sha = calib.get("files_sha256")
        lines.append(
            f"calibration   {calib['method']}, {calib.get('samples')} samples"
            + (f" (files sha256 {sha[:16]}…)" if sha else "")
        )
    lines.append(f"algorithm     {describe_algorithm(info.get('algorithm'))}")
    coverage = coverage_text(info.get("coverage") or {})
    if coverage:
        lines.append(f"coverage      {coverage}")
    lines += [
        f"content hash  {_hash_line(info.get('content_hash') or {})}",
        f"sizes         float {human_bytes(sizes['original_bytes'])} → {human_bytes(sizes['quantized_bytes'])} "
        f"in memory ({_ratio(sizes['compression_ratio'])}); file {human_bytes(sizes['file_bytes'])} "
        f"({_ratio(sizes['file_ratio'])}), {sizes['tensors']} tensors",
        f"output SQNR   {db(metrics.get('output_sqnr_db'))}",
        f"checks        load test passed: {yes_no(metrics.get('load_test_passed'))}, "
        f"weight range valid: {yes_no(metrics.get('weight_range_valid'))}",
        "",
        f"layers ({len(info['layers'])})",
    ]
    rows = [
        [
            r["name"] or "(model)",
            r["type"],
            r["dtype"],
            r.get("granularity") or "—",
            "×".join(str(d) for d in r.get("shape") or []) or "—",
            db(r.get("weight_sqnr_db")),
        ]
        for r in info["layers"]
    ]
    header = ["name", "type", "dtype", "granularity", "shape", "weight SQNR"]
    if any(r.get("algorithm", "rtn") != "rtn" or r.get("bias_corrected") for r in info["layers"]):
        header.append("algorithm")
        for row, r in zip(rows, info["layers"], strict=True):
            row.append(str(r.get("algorithm") or "rtn") + (" + bias corr." if r.get("bias_corrected") else ""))
    lines += _table(header, rows)
    if info["skipped"]:
        lines += ["", f"skipped ({len(info['skipped'])})"]
        lines += _table(
            ["name", "type", "reason"], [[s["name"] or "(model)", s["type"], s["reason"]] for s in info["skipped"]]
        )
    warnings = metrics.get("warnings") or []
    if warnings:
        lines += ["", "warnings"] + [f"  {w}" for w in warnings]
    return "\n".join(lines)
