"""The background work of the window as plain functions of a TaskContext (no Qt, no widgets).

Each runs on the worker thread and calls only the public API of
``mono_quant_core``; importing it (and so torch) happens here, never on the
GUI thread.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mono_quant_core.errors import AmbiguousEntryError, MonoQuantError, QuantizedCheckpointError, ValidationFailed

if TYPE_CHECKING:
    from mono_quant_gui.run.worker import TaskContext


def prepare_torch() -> None:
    """Import torch (on the worker thread) and leave one core to the GUI thread.

    With every core in torch's intra-op pool, its worker threads spin-wait and
    the GUI thread competes with them: on 2 busy cores a tiny model ran 20×
    slower and the event loop stalled.  One thread fewer than the cores avoids both.
    """
    import torch

    wanted = max(1, (os.cpu_count() or 2) - 1)
    if torch.get_num_threads() > wanted:
        torch.set_num_threads(wanted)


#: Engine packages imported while a model loads, so a run never stops to import (and,
#: without cached bytecode, compile) a module while holding the GIL.
ENGINE_PACKAGES = (
    "mono_quant_core.quantizer",
    "mono_quant_core.calibration",
    "mono_quant_core.modules",
    "mono_quant_core.kernels",
    "mono_quant_core.validation",
    "mono_quant_core.serialization",
)


def warm_engine() -> None:
    """Import the engine's run-time packages now (on the worker thread)."""
    import importlib

    for name in ENGINE_PACKAGES:
        importlib.import_module(name)


def settle_memory() -> None:
    """Collect garbage once, then freeze what survives (``gc.freeze``).

    A full collection walks every live object; with torch, Qt and pyqtgraph
    loaded that is 200k+ objects and 70-120 ms with the GIL held, which stalls
    the event loop when it lands mid-run.  Frozen objects are skipped by later
    collections.  Unfreezing first lets the previous model's cycles be freed.

    Call it on the GUI thread only (the window does, after a model has loaded):
    a collection on a worker thread can free Qt objects off their own thread,
    which crashes the process.
    """
    import gc

    gc.unfreeze()
    gc.collect()
    gc.freeze()


@dataclass
class LoadOutcome:
    """A loaded model and its module table, or the entries to choose from."""

    script: str
    checkpoint: str | None
    loaded: Any = None  # LoadedModel
    rows: list[Any] | None = None  # ModuleRows
    candidates: list[str] | None = None  # several models fit: the user picks one
    chosen: list[str] | None = None  # the layers a job's rules select (None: no job)
    quantized_message: str | None = None  # ``checkpoint`` is a mono-quant output: why it was refused
    result: Any = None  # a mono-quant output opened as a quantized model (QuantResult)
    metric: str | None = None  # the task metric the script defines (its function's name), if any
    devices: list[str] | None = None  # where a run can compute (QuantConfig.device): "cpu", "cuda:0", ...


@dataclass
class OpenedQuantized:
    """What the window shows for a mono-quant output: its runnable model and where it came from
    (the same ``model``/``source`` a float model's LoadedModel has)."""

    model: Any
    source: dict[str, Any]
    keys: Any = None


@dataclass
class SaveOutcome:
    path: str
    bytes: int


def load_model_task(
    ctx: TaskContext,
    script: str,
    checkpoint: str | None,
    entry: str | None,
    entry_kwargs: dict | None = None,
    select: Any = None,
    metric: str | None = None,
) -> LoadOutcome:
    """Import the script, build the model, load the checkpoint non-strictly and list its modules.

    Loading is non-strict so that a key mismatch can be shown to the user, who
    decides whether to continue (``loaded.keys.ok`` is False then).  With
    ``select`` (a job's QuantConfig) the layers its rules choose are returned too, and the
    name of the task metric the script defines (``metric``, or ``evaluate``) when it has one.
    """
    ctx.progress(0, 0, "Loading PyTorch…")
    prepare_torch()
    import mono_quant_core as mq

    ctx.cancel.check()
    ctx.progress(0, 0, f"Running {Path(script).name}…")
    try:
        # A large checkpoint stays on disk: the tree comes from the model built without weights.
        loaded = mq.open_model(script, checkpoint, entry=entry, entry_kwargs=entry_kwargs, strict=False, lazy="auto")
    except AmbiguousEntryError as exc:
        return LoadOutcome(script, checkpoint, candidates=list(exc.candidates))
    except QuantizedCheckpointError as exc:
        return LoadOutcome(script, checkpoint, quantized_message=f"{Path(exc.path).name} is {exc.what}.")
    ctx.cancel.check()
    ctx.progress(0, 0, "Reading the module tree…")
    rows = mq.module_table(loaded.model)
    chosen = None if select is None else mq.select_layers(loaded.model, select).chosen
    try:
        found = task_metric(script, metric)
    except MonoQuantError:  # a broken or missing named metric is the run's error, said then
        found = None
    warm_engine()
    return LoadOutcome(
        script,
        checkpoint,
        loaded=loaded,
        rows=rows,
        chosen=chosen,
        metric=None if found is None else found.name,
        devices=mq.available_devices(),
    )


#: The task metric a script offers without being asked for one by name.
DEFAULT_METRIC = "evaluate"


def task_metric(script: str, name: str | None = None) -> Any:
    """The script's task metric (a ``mono_quant_core.Metric``): ``name`` when given (a MetricError
    when the script has no such function), else its ``evaluate`` when it defines one, else None."""
    import mono_quant_core as mq

    if name is not None:
        return mq.load_metric(script, name)
    if not defines_name(script, DEFAULT_METRIC):
        return None
    return mq.load_metric(script, DEFAULT_METRIC)


def defines_name(script: str, name: str) -> bool:
    """Whether the script binds ``name`` at its top level (a def, an assignment or an import);
    read as source, so a script without a metric is told from one whose metric is broken."""
    import ast

    try:
        tree = ast.parse(Path(script).read_bytes())
    except (OSError, SyntaxError, ValueError):
        return False
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and node.name == name:
            return True
        if isinstance(node, (ast.Import, ast.ImportFrom)) and any(
            (alias.asname or alias.name.split(".")[0]) == name for alias in node.names
        ):
            return True
        targets = node.targets if isinstance(node, ast.Assign) else [getattr(node, "target", None)]
        if any(isinstance(t, ast.Name) and t.id == name for t in targets):
            return True
    return False


def script_beside(path: str) -> str | None:
    """The model script a mono-quant output names (its metadata's ``source.script``), when it lies
    in the same folder; None otherwise (or when the file cannot be read).

    Called on the GUI thread: a ``.safetensors`` header is read as plain JSON (no torch); only a
    ``.pt`` file needs the engine's reader."""
    try:
        if path.lower().endswith(".safetensors"):
            meta = json.loads(_safetensors_metadata(path).get("mono_quant", "{}"))
        else:
            import mono_quant_core as mq

            meta = mq.read_metadata(path)
        name = (meta.get("source") or {}).get("script") if isinstance(meta, dict) else None
    except (ValueError, OSError, MonoQuantError):
        return None
    candidate = Path(path).parent / str(name) if name else None
    return str(candidate) if candidate is not None and candidate.is_file() else None


def _safetensors_metadata(path: str) -> dict[str, str]:
    """The ``__metadata__`` of a safetensors header (8 bytes of length, then JSON)."""
    with open(path, "rb") as f:
        size = int.from_bytes(f.read(8), "little")
        if not 0 < size <= 100 << 20:
            raise ValueError(f"{path}: not a safetensors header")
        header = json.loads(f.read(size))
    meta = header.get("__metadata__") if isinstance(header, dict) else None
    return meta if isinstance(meta, dict) else {}


def open_quantized_task(
    ctx: TaskContext, script: str, path: str, entry: str | None, entry_kwargs: dict | None
) -> LoadOutcome:
    """Open the mono-quant output ``path`` with the model ``script`` defines, as a finished run."""
    ctx.progress(0, 0, "Loading PyTorch…")
    prepare_torch()
    import mono_quant_core as mq

    ctx.cancel.check()
    ctx.progress(0, 0, f"Reading {Path(path).name}…")
    result = mq.open_quantized(path, script, entry=entry, entry_kwargs=entry_kwargs)
    source = {**result.source, "script_path": str(script), "checkpoint_path": str(path)}
    opened = OpenedQuantized(result.model, source)
    warm_engine()
    return LoadOutcome(script, path, loaded=opened, rows=mq.module_table(result.model), result=result)


def preview_task(ctx: TaskContext, folder: str, model: Any, samples: int | None) -> Any:
    """Summarise a calibration folder and dry-run its first sample through ``model`` (when given)."""
    ctx.progress(0, 0, f"Reading {Path(folder).name}…")
    prepare_torch()
    import mono_quant_core as mq

    return mq.preview_calibration(folder, model=model, samples=samples)


def _metric_and_samples(
    model: Any,
    folder: str | None,
    samples: int | None,
    seed: int | None,
    skip_unusable: bool,
    script: str | None,
    metric: str | None,
) -> tuple[Any, Any]:
    """The task metric (a MetricError names script and function) and the calibration samples of a run."""
    import mono_quant_core as mq

    chosen_metric = task_metric(script, metric) if script else None
    calibration = (
        mq.load_calibration(folder, samples=samples, seed=seed, skip_unusable=skip_unusable, model=model)
        if folder
        else None
    )
    return chosen_metric, calibration


def quantize_task(
    ctx: TaskContext,
    model: Any,
    config: Any,
    folder: str | None,
    samples: int | None,
    seed: int | None = None,
    skip_unusable: bool = False,
    script: str | None = None,
    metric: str | None = None,
) -> Any:
    """Run ``quantize``; its plan and phases reach the window through ``ctx.on_phase``,
    ``ctx.task.info["report"]`` is set when the run failed its checks.  With ``script``, its task
    metric (``metric``, or the ``evaluate`` it defines) is measured on both models."""
    ctx.progress(0, 0, "Preparing…")
    prepare_torch()
    import mono_quant_core as mq

    chosen_metric, calibration = _metric_and_samples(model, folder, samples, seed, skip_unusable, script, metric)
    try:
        return mq.quantize(
            model,
            config,
            calibration,
            progress=ctx.progress,
            cancel=ctx.cancel,
            on_layer=ctx.on_layer,
            on_phase=ctx.on_phase,
            metric=chosen_metric,
        )
    except ValidationFailed as exc:
        ctx.task.info["report"] = exc.report  # the dashboard still shows what was measured
        raise


def save_task(ctx: TaskContext, result: Any, path: str, writer: str = "Save As") -> SaveOutcome:
    """Write the quantized model (atomically, by the core) and return the file's size.

    ``path`` is claimed for ``writer`` while it is written, so the batch queue
    never writes the same file at the same time; a path another writer holds
    raises OutputBusy (the message names that writer).
    """
    ctx.progress(0, 0, f"Saving {os.path.basename(path)}…")
    import mono_quant_core as mq
    from mono_quant_gui.queue.output_claims import claimed

    with claimed(path, writer):
        written = mq.save_quantized(result, path)
    return SaveOutcome(path, int(written))


def sensitivity_task(
    ctx: TaskContext,
    model: Any,
    config: Any,
    folder: str | None,
    samples: int | None,
    seed: int | None = None,
    skip_unusable: bool = False,
    script: str | None = None,
    metric: str | None = None,
) -> Any:
    """Run ``analyze_sensitivity`` on the samples Quantize would use, with the script's task metric
    (``metric``, or the ``evaluate`` it defines; none: no metric); plan and phases go through ``ctx``."""
    ctx.progress(0, 0, "Preparing…")
    prepare_torch()
    import mono_quant_core as mq

    chosen_metric, calibration = _metric_and_samples(model, folder, samples, seed, skip_unusable, script, metric)
    return mq.analyze_sensitivity(
        model,
        config,
        calibration,
        metric=chosen_metric,
        progress=ctx.progress,
        cancel=ctx.cancel,
        on_phase=ctx.on_phase,
    )
