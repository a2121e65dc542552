"""Sensitivity's per-layer evaluations on a Ray cluster: the workbench shipped once, one task per layer.

``analyze_sensitivity(..., evaluate_many=sensitivity_on(cluster))`` computes the
float outputs and quantizes every layer here, as a local run does; then the
workbench (the model being swapped, the quantized layers, the validation samples
and float outputs: ``Workbench.__getstate__``) goes into the object store once
and each layer's evaluation is a Ray task running the same ``Workbench.evaluate``.
A worker keeps the last workbench it read, so it deserializes the model once.
The model script's classes (and its metric) are pickled by value: the workers
need not see the script.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from types import ModuleType
from typing import TYPE_CHECKING, Any

from .runner import POLL_S, RayCluster

if TYPE_CHECKING:
    from ..sensitivity import EvaluateMany, Evaluation, Workbench

#: The module names ``loading.script_import`` gives model scripts.
_SCRIPT_PREFIX = "_mono_quant_script_"
#: The workbench a worker process read last: (object id, workbench).
_cached: tuple[str, Any] | None = None


def sensitivity_on(cluster: RayCluster) -> EvaluateMany:
    """An ``evaluate_many`` for ``analyze_sensitivity`` that runs each layer's evaluation on ``cluster``."""

    def evaluate_many(bench: Workbench, names: list[str]) -> Iterator[tuple[str, Evaluation]]:
        ray = cluster._ray()
        with _scripts_by_value(ray, bench):
            ref = ray.put(bench)
        task = ray.remote(num_cpus=1, max_retries=cluster.retries)(_evaluate)
        pending = {task.remote([ref], name): name for name in names}
        try:
            while pending:
                bench.stepper.check()
                ready, _ = ray.wait(list(pending), num_returns=len(pending), timeout=POLL_S, fetch_local=True)
                for done in ready:
                    name = pending.pop(done)
                    yield name, _result(ray, done)
        finally:
            for left in pending:
                ray.cancel(left, force=True)

    return evaluate_many


def _result(ray: ModuleType, ref: Any) -> Evaluation:
    """The task's Evaluation; the worker's own error (a CalibrationError naming a sample...) raised as it was."""
    try:
        value: Evaluation = ray.get(ref)
    except ray.exceptions.RayTaskError as exc:
        cause = getattr(exc, "cause", None)
        if isinstance(cause, Exception):
            raise cause from None
        raise
    return value


def _evaluate(shipped: list[Any], name: str) -> Evaluation:
    """The body of one task: layer ``name`` quantized alone, measured by the shipped workbench."""
    global _cached
    import ray

    key = shipped[0].hex()
    if _cached is None or _cached[0] != key:
        _cached = None  # free the previous model before reading the next
        _cached = (key, ray.get(shipped[0]))
    bench = _cached[1]
    layers: dict[str, Any] = bench.shipped_layers
    return bench.evaluate({name: layers[name]})


@contextlib.contextmanager
def _scripts_by_value(ray: ModuleType, bench: Workbench) -> Iterator[None]:
    """Pickle the model script's module (and modules beside it) by value while the workbench is put."""
    modules = _script_modules(bench)
    for module in modules:
        ray.cloudpickle.register_pickle_by_value(module)
    try:
        yield
    finally:
        for module in modules:
            with contextlib.suppress(ValueError):
                ray.cloudpickle.unregister_pickle_by_value(module)


def _script_modules(bench: Workbench) -> list[ModuleType]:
    """The imported model scripts and the helper modules in their folders (not importable on a worker)."""
    scripts = [m for n, m in list(sys.modules.items()) if n.startswith(_SCRIPT_PREFIX) and m is not None]
    folders = {os.path.dirname(os.path.abspath(f)) for m in scripts if (f := getattr(m, "__file__", None))}
    found = list(scripts)
    for name, module in list(sys.modules.items()):
        file = getattr(module, "__file__", None)
        if module is None or module in found or not file or "." in name:
            continue
        if os.path.dirname(os.path.abspath(file)) in folders:
            found.append(module)
    return found
