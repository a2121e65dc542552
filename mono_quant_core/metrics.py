"""Task metrics: a script's ``evaluate(model)``, run on the float and on the quantized model.

A metric returns a number or a dict of names to numbers; higher is better unless the
script sets ``metric_higher_is_better = False``.  Every failure is a ``MetricError``
that names the script and the function.
"""

from __future__ import annotations

import inspect
import math
import os
import reprlib
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

from .errors import MetricError, MonoQuantError
from .loading.script_import import import_script

HIGHER_IS_BETTER = "metric_higher_is_better"  # the script's module-level switch
_PACKAGE_DIR = str(Path(__file__).resolve().parent)
_REPR = reprlib.Repr()  # a short repr of what a metric returned
_REPR.maxstring = _REPR.maxother = 40


@dataclass
class Metric:
    """A metric function with its name, direction and the script that defines it."""

    fn: Callable[[Any], Any]
    name: str
    higher_is_better: bool = True
    #: The script's absolute path, or None for a plain callable.
    script: str | None = None

    def evaluate(self, model: Any, which: str) -> dict[str, float]:
        """``fn(model)`` under ``torch.no_grad()`` as ``{name: value}``; ``which`` ("on the float
        model") ends the message of a failure."""
        import torch

        try:
            with torch.no_grad():
                result = self.fn(model)
        except MonoQuantError:
            raise  # Cancelled and the engine's own errors are not the metric's fault
        except (Exception, SystemExit) as exc:
            first = f"{self._where}: {self.name}(model) raised {type(exc).__name__}: {exc} ({which})"
            raise MetricError(f"{first}\n\n{_user_traceback(exc)}", self.script, self.name) from exc
        return self._values(result, which)

    @property
    def _where(self) -> str:
        return Path(self.script).name if self.script else "the metric"

    def _values(self, result: Any, which: str) -> dict[str, float]:
        number = _number(result)
        if number is not None:
            return {self.name: number}
        if isinstance(result, dict) and result:
            values = {}
            for key, value in result.items():
                number = _number(value)
                if not isinstance(key, str) or number is None:
                    entry = f"{_REPR.repr(key)}: {_REPR.repr(value)}"
                    self._refuse(f"a dict whose entry {entry} is not name: number", which)
                values[key] = number
            return values
        self._refuse(f"{type(result).__name__} {_REPR.repr(result)}", which)

    def _refuse(self, returned: str, which: str) -> NoReturn:
        raise MetricError(
            f"{self._where}: {self.name}(model) returned {returned} ({which}); "
            "it must return a finite number or a non-empty dict of names to finite numbers",
            self.script,
            self.name,
        )


def _number(value: Any) -> float | None:
    """``value`` as a finite float, or None when it is not a real number (a bool is not)."""
    if getattr(value, "ndim", None) == 0 and hasattr(value, "item"):
        value = value.item()  # a 0-dim tensor, a numpy scalar or 0-d array
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def _user_traceback(exc: BaseException) -> str:
    """The exception's traceback without the engine's own frames."""
    te = traceback.TracebackException.from_exception(exc)
    te.stack = traceback.StackSummary.from_list([f for f in te.stack if not f.filename.startswith(_PACKAGE_DIR)])
    return "".join(te.format()).rstrip()


def primary_key(values: dict[str, float]) -> str:
    """The value that targets compare: the first key returned (a number's key is the function's name)."""
    return next(iter(values))


def metric_drop(float_value: float, quantized_value: float, higher_is_better: bool) -> float:
    """How much worse the quantized value is than the float one (positive: worse)."""
    return float_value - quantized_value if higher_is_better else quantized_value - float_value


def as_metric(fn: Callable[[Any], Any] | Metric) -> Metric:
    """A Metric as it is; a plain callable named by its ``__name__``, higher is better unless it
    carries ``higher_is_better = False``."""
    if isinstance(fn, Metric):
        return fn
    name = getattr(fn, "__name__", "metric")
    if not callable(fn):
        raise MetricError(f"a metric must be a function of the model, not {type(fn).__name__}", None, name)
    higher = _direction(getattr(fn, "higher_is_better", True), f"{name}.higher_is_better", None, name)
    return Metric(fn, name, higher, None)


def load_metric(script: str | os.PathLike[str], name: str = "evaluate") -> Metric:
    """The function ``name`` of the model script, with the script's ``metric_higher_is_better``."""
    path = Path(script).expanduser().resolve()
    module = import_script(path)
    fn = getattr(module, name, None)
    if fn is None:
        others = _candidates(module)
        hint = f" (functions of one argument there: {', '.join(others)})" if others else ""
        raise MetricError(
            f"{path.name} has no function {name}(model); define one, or name another with --metric NAME{hint}",
            str(path),
            name,
        )
    if not callable(fn):
        raise MetricError(f"{path.name}: {name} is a {type(fn).__name__}, not a function of the model", str(path), name)
    where = f"{path.name}: {HIGHER_IS_BETTER}"
    higher = _direction(getattr(module, HIGHER_IS_BETTER, True), where, str(path), name)
    return Metric(fn, name, higher, str(path))


def _direction(value: Any, where: str, script: str | None, name: str) -> bool:
    if not isinstance(value, bool):
        raise MetricError(f"{where} must be True or False, not {_REPR.repr(value)}", script, name)
    return value


def _candidates(module: Any) -> list[str]:
    """Public functions defined in the script that take exactly one required argument."""
    found = []
    for attr, value in vars(module).items():
        if attr.startswith("_") or not inspect.isfunction(value) or value.__module__ != module.__name__:
            continue
        try:
            params = inspect.signature(value).parameters.values()
        except (TypeError, ValueError):
            continue
        positional = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
        if sum(p.default is p.empty and p.kind in positional for p in params) == 1:
            found.append(attr)
    return found
