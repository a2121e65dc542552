"""Import a user's model script under a private module name.

The module name mixes a hash of the script's absolute path with a hash of its
contents, so two ``model.py`` files in different folders never clash and a
changed file yields fresh classes.  An unchanged file returns the cached module.
"""

from __future__ import annotations

import hashlib
import os
import sys
import threading
import traceback
import types
from dataclasses import dataclass
from pathlib import Path

from ..errors import ScriptError

_PACKAGE_DIR = str(Path(__file__).resolve().parent.parent)
_LOCK = threading.RLock()  # sys.path and sys.modules are process-wide


@dataclass
class _Cached:
    mtime_ns: int
    size: int
    digest: str
    module: types.ModuleType


_CACHE: dict[str, _Cached] = {}
# Helper modules that scripts imported from their own folders, by name.
_SIBLINGS: dict[str, types.ModuleType] = {}
# Modules of the same names imported from elsewhere, set aside meanwhile.
_SET_ASIDE: dict[str, types.ModuleType] = {}


def import_script(path: str | os.PathLike) -> types.ModuleType:
    """Import the script at ``path`` (cached by path, mtime, size and content hash)."""
    script = Path(path).expanduser().resolve()
    if not script.is_file():
        raise ScriptError(f"{path}: model script not found")
    if script.suffix != ".py":
        raise ScriptError(f"{script.name}: a model script must be a .py file")
    with _LOCK:
        stat = script.stat()
        cached = _CACHE.get(str(script))
        if cached and (cached.mtime_ns, cached.size) == (stat.st_mtime_ns, stat.st_size):
            return cached.module
        source = script.read_bytes()
        digest = hashlib.sha256(source).hexdigest()
        if cached and cached.digest == digest:
            cached.mtime_ns, cached.size = stat.st_mtime_ns, stat.st_size
            return cached.module
        if cached:
            sys.modules.pop(cached.module.__name__, None)
        module = _execute(script, source, digest)
        _CACHE[str(script)] = _Cached(stat.st_mtime_ns, stat.st_size, digest, module)
        return module


def private_module_name(script: Path, digest: str) -> str:
    """``_mono_quant_script_<hash>``: unique per absolute path and content."""
    key = hashlib.sha256(f"{script}\0{digest}".encode()).hexdigest()[:16]
    return f"_mono_quant_script_{key}"


def _execute(script: Path, source: bytes, digest: str) -> types.ModuleType:
    name = private_module_name(script, digest)
    module = types.ModuleType(name)
    module.__file__ = str(script)
    folder = str(script.parent)
    _forget_siblings()
    saved_path, saved_bytecode = list(sys.path), sys.dont_write_bytecode
    # As with `python model.py`, the script's own folder comes first: a helper
    # module beside it wins over a same-named module imported earlier from
    # elsewhere.  Those are set aside while the script's helpers are current
    # (imports inside its factory must find the same helpers) and put back
    # when the next script's import forgets them.
    shadowed = _set_aside_shadowed(Path(folder))
    before = set(sys.modules)
    sys.path.insert(0, folder)
    # compile() from the bytes we hashed, never a stale __pycache__; and write
    # no bytecode next to the user's files.
    sys.dont_write_bytecode = True
    sys.modules[name] = module  # dataclasses and pickle look classes up here
    try:
        code = compile(source, str(script), "exec", dont_inherit=True)
        exec(code, module.__dict__)
    except (Exception, SystemExit) as exc:
        sys.modules.pop(name, None)
        raise ScriptError(script_failure(script, exc, "while importing it")) from exc
    finally:
        sys.path[:] = saved_path
        sys.dont_write_bytecode = saved_bytecode
        _SIBLINGS.update(
            (m, sys.modules[m]) for m in set(sys.modules) - before if _is_sibling(m, sys.modules.get(m), folder)
        )
        _SET_ASIDE.update(shadowed)
    return module


# Never set aside: the standard library and what the engine itself runs on.
_KEEP = frozenset(sys.stdlib_module_names) | {
    "torch",
    "safetensors",
    "numpy",
    "mono_quant_core",
    "mono_quant_gui",
    "PySide6",
    "shiboken6",
    "pyqtgraph",
}


def _set_aside_shadowed(folder: Path) -> dict[str, types.ModuleType]:
    """Remove from sys.modules the modules that a file in ``folder`` shadows."""
    try:
        local = {p.stem for p in folder.glob("*.py")}
        local |= {p.parent.name for p in folder.glob("*/__init__.py")}
    except OSError:
        return {}
    names = {
        n for n in local if n in sys.modules and n not in _KEEP and not _is_sibling(n, sys.modules[n], str(folder))
    }
    moved = {m: sys.modules[m] for m in list(sys.modules) if m.split(".")[0] in names}
    for m in moved:
        del sys.modules[m]
    return moved


def _forget_siblings() -> None:
    """Drop helper modules imported next to earlier scripts, so a new script gets its own,
    and put back the modules they had set aside."""
    for name, module in _SIBLINGS.items():
        if sys.modules.get(name) is module:  # not replaced by someone else since
            del sys.modules[name]
    _SIBLINGS.clear()
    for name, module in _SET_ASIDE.items():
        sys.modules.setdefault(name, module)
    _SET_ASIDE.clear()


def _is_sibling(name: str, module: types.ModuleType | None, folder: str) -> bool:
    """A module or package found in the script's own folder (not a venv below it)."""
    file = getattr(module, "__file__", None)
    if not file:
        return False
    rel = os.path.relpath(os.path.abspath(file), folder)
    top = name.split(".")[0]
    return rel == f"{top}.py" or rel.split(os.sep)[0] == top


def script_failure(script: Path, exc: BaseException, when: str) -> str:
    """A message naming the script and the exception, followed by the script's traceback."""
    te = traceback.TracebackException.from_exception(exc)
    te.stack = traceback.StackSummary.from_list([f for f in te.stack if not f.filename.startswith(_PACKAGE_DIR)])
    detail = "".join(te.format()).rstrip()
    first = "".join(traceback.format_exception_only(exc)).strip().splitlines()[-1]
    return f"{script.name}: the script raised {first} {when}\n\n{detail}"
