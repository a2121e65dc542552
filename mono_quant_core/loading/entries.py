"""Find the model in a script (DESIGN.md §3) and build it.

Discovery order: the entry the user names; a factory ``build_model``,
``create_model``, ``get_model`` or ``make_model``; a module-level ``nn.Module``
instance named ``model``; the single ``nn.Module`` subclass defined in the
script whose constructor needs no arguments.  The first rule that finds
anything decides; two different candidates within it are ambiguous.
"""

from __future__ import annotations

import copy
import inspect
import json
import os
import types
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from torch import nn

from ..errors import AmbiguousEntryError, ConfigError, ScriptError
from .script_import import import_script, script_failure

FACTORY_NAMES = ("build_model", "create_model", "get_model", "make_model")
INSTANCE_NAME = "model"


def list_entries(script: str | os.PathLike) -> list[str]:
    """Model candidates of ``script`` in discovery order (the first rule's come first)."""
    return list_entries_of(import_script(script))


def parse_entry_kwargs(entry_kwargs: Mapping[str, Any] | str | None, label: str = "entry_kwargs") -> dict[str, Any]:
    """Keyword arguments for the entry: a dict, a JSON object string, or None.

    ``label`` names the setting in errors (the CLI passes ``--entry-kwargs``).
    """
    if entry_kwargs is None or entry_kwargs == "":
        return {}
    if isinstance(entry_kwargs, str):
        try:
            entry_kwargs = json.loads(entry_kwargs)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{label}: not valid JSON ({exc})") from exc
    if not isinstance(entry_kwargs, Mapping):
        raise ConfigError(
            f"{label}: must be a JSON object of keyword arguments like '{{\"width\": 8}}', "
            f"got {type(entry_kwargs).__name__}"
        )
    return dict(entry_kwargs)


def choose_entry(module: types.ModuleType, script: Path, entry: str | None) -> str:
    """The entry's name: ``entry`` itself when given, else the one discovery finds."""
    if entry:
        _lookup(module, script, entry)
        return entry
    for rule in _rules(module):
        if len(rule) == 1:
            return rule[0]
        if rule:
            raise AmbiguousEntryError(
                f"{script.name}: several models fit ({', '.join(rule)}); pick one with entry=NAME (--entry NAME)", rule
            )
    raise ScriptError(_nothing_found(module, script))


def build_entry(module: types.ModuleType, script: Path, entry: str, kwargs: dict[str, Any]) -> nn.Module:
    """Call (or copy) the entry and return its ``nn.Module``; script errors keep their traceback."""
    target = _lookup(module, script, entry)
    if isinstance(target, nn.Module):
        if kwargs:
            raise ScriptError(f"{script.name}: {entry} is a model instance; it takes no entry_kwargs")
        # Copied so that loading a checkpoint never changes the script's own object.
        return copy.deepcopy(target)
    if not callable(target):
        raise ScriptError(f"{script.name}: {entry} is a {type(target).__name__}, not a model or a factory")
    try:
        inspect.signature(target).bind(**kwargs)
    except TypeError as exc:
        raise ScriptError(
            f"{script.name}: {entry}{_signature(target)} does not accept entry_kwargs "
            f"{json.dumps(kwargs, default=str)}: {exc}"
        ) from exc
    except ValueError:
        pass  # no signature to check (a builtin); the call itself will tell
    try:
        built = target(**kwargs)
    except (Exception, SystemExit) as exc:
        raise ScriptError(script_failure(script, exc, f"in {entry}()")) from exc
    if not isinstance(built, nn.Module):
        raise ScriptError(f"{script.name}: {entry}() returned a {type(built).__name__}, not an nn.Module")
    return built


def _rules(module: types.ModuleType) -> list[list[str]]:
    space = vars(module)
    factories = _distinct(
        space, [n for n in FACTORY_NAMES if callable(space.get(n)) and not isinstance(space.get(n), nn.Module)]
    )
    instance = [INSTANCE_NAME] if isinstance(space.get(INSTANCE_NAME), nn.Module) else []
    classes = [n for n, v in space.items() if _own_module_class(v, module) and _needs_no_args(v)]
    return [factories, instance, classes]


def _distinct(space: dict, names: list[str]) -> list[str]:
    """Names with aliases of the same object removed (``get_model = build_model``)."""
    seen: list[int] = []
    out = []
    for name in names:
        if id(space[name]) not in seen:
            seen.append(id(space[name]))
            out.append(name)
    return out


def _own_module_class(value: Any, module: types.ModuleType) -> bool:
    return inspect.isclass(value) and issubclass(value, nn.Module) and value.__module__ == module.__name__


def _needs_no_args(cls: type) -> bool:
    try:
        params = inspect.signature(cls).parameters.values()
    except (TypeError, ValueError):
        return False
    return all(p.default is not p.empty or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD) for p in params)


def _lookup(module: types.ModuleType, script: Path, entry: str) -> Any:
    target: Any = module
    for part in entry.split("."):
        if not hasattr(target, part):
            found = list_entries_of(module)
            hint = f"; candidates: {', '.join(found)}" if found else ""
            raise ScriptError(f"{script.name}: has no entry named {entry!r}{hint}")
        target = getattr(target, part)
    return target


def list_entries_of(module: types.ModuleType) -> list[str]:
    """Like ``list_entries`` for an already imported module."""
    return [name for rule in _rules(module) for name in rule]


def _nothing_found(module: types.ModuleType, script: Path) -> str:
    needing_args = [
        f"{n}{_signature(v)}" for n, v in vars(module).items() if _own_module_class(v, module) and not _needs_no_args(v)
    ]
    msg = (
        f"{script.name}: no model found: define build_model(), create_model(), get_model() "
        f"or make_model(), a module-level nn.Module named 'model', or one nn.Module "
        f"subclass whose constructor needs no arguments"
    )
    if needing_args:
        msg += (
            f". Classes that need arguments: {', '.join(needing_args)}; name one with "
            "entry=NAME and pass its arguments as entry_kwargs (JSON)"
        )
    return msg


def _signature(obj: Any) -> str:
    try:
        return str(inspect.signature(obj))
    except (TypeError, ValueError):
        return "(...)"
