"""What the frozen app carries and what it leaves out (used by mono-quant.spec and hooks/).

Plain Python with no PyInstaller import, so tests/test_packaging_rules.py checks the rules
without building. docs/packaging.md explains each choice and gives the sizes.
"""

from __future__ import annotations

import importlib.util
import os
import pathlib
import shutil
import subprocess
import sys
from collections.abc import Iterable

#: Modules PyInstaller must not follow (Analysis(excludes=...)).
EXCLUDES = [
    # No Tk anywhere in the app.
    "tkinter",
    "_tkinter",
    # Notebook/board integrations and test tools that nothing imports at run time. (Not
    # torch.testing._internal: torch.utils.checkpoint imports its logging_tensor, and loading
    # the demo fails without it.)
    "torch.utils.tensorboard",
    "tensorboard",
    "pyqtgraph.examples",
    "pyqtgraph.jupyter",
    "pyqtgraph.opengl",  # 3-D views need PyOpenGL; the app draws 2-D plots only
    "IPython",
    "matplotlib",
    "pytest",
    "setuptools",
    "pip",
    # pyqtgraph tries every Qt binding; the app runs on PySide6 alone.
    "PyQt5",
    "PyQt6",
    "PySide2",
]

#: PySide6 modules the app does not use (neither mono_quant_gui nor pyqtgraph imports them). QtNetwork
#: is the one PyInstaller's PySide6 hook would otherwise add (with libQt6Network and the tls and
#: networkinformation plugins); the others are guards should an optional import pull them in.
QT_LEFT_OUT = [
    "QtNetwork",
    "QtQml",
    "QtQuick",
    "QtQuickWidgets",
    "QtQuickControls2",
    "QtQuickTest",
    "QtQuick3D",
    "QtWebEngineCore",
    "QtWebEngineWidgets",
    "QtWebEngineQuick",
    "QtWebChannel",
    "QtWebSockets",
    "QtMultimedia",
    "QtMultimediaWidgets",
    "QtPdf",
    "QtPdfWidgets",
    "QtSql",
    "QtDesigner",
    "QtUiTools",
    "QtHelp",
    "QtCharts",
    "QtDataVisualization",
    "QtGraphs",
    "Qt3DCore",
]
EXCLUDES += [f"PySide6.{name}" for name in QT_LEFT_OUT]

#: Standard-library modules not carried for users' model scripts: GUI toolkits, test suites, installers.
STDLIB_LEFT_OUT = frozenset(
    {
        "tkinter",
        "turtle",
        "turtledemo",
        "idlelib",
        "test",
        "ensurepip",
        "lib2to3",
        "pydoc_data",
        "venv",
    }
)

# torch's wheel carries C++ test programs (torch/test, torch/bin) and test libraries (~135 MB) that
# nothing links to or imports. torch/bin/torch_shm_manager is the exception: `import torch` fails
# without it ("Unable to find torch_shm_manager").
_TORCH_TEST_DIRS = ("torch/test/", "torch/bin/")
_TORCH_NEEDED = frozenset({"torch/bin/torch_shm_manager"})
_TORCH_TEST_LIBS = frozenset(
    {
        "libtorchbind_test.so",
        "libjitbackend_test.so",
        "libaoti_custom_ops.so",
        "libbackend_with_compiler.so",
    }
)
# Qt's own translations of its dialogs: the app installs no QTranslator, so Qt never loads them.
_QT_TRANSLATIONS = "PySide6/Qt/translations/"

#: Binaries whose symbol tables are stripped (`strip --strip-unneeded`; the dynamic symbols stay):
#: torch's libraries are shipped unstripped, libtorch_cpu.so alone carries ~90 MB of symbols.
STRIP_DIRS = ("torch/lib/",)


def _posix(dest: str) -> str:
    return dest.replace("\\", "/")


def needed(dest: str) -> bool:
    """Whether a file PyInstaller collected (its destination path in the folder) is shipped."""
    dest = _posix(dest)
    if dest in _TORCH_NEEDED:
        return True
    if dest.startswith(_TORCH_TEST_DIRS) or dest.startswith(_QT_TRANSLATIONS):
        return False
    return pathlib.PurePosixPath(dest).name not in _TORCH_TEST_LIBS


def keep(toc: Iterable[tuple]) -> list[tuple]:
    """The entries of a PyInstaller TOC (dest, source, typecode) that are shipped."""
    return [entry for entry in toc if needed(entry[0])]


def stdlib_hiddenimports() -> list[str]:
    """Every public standard-library module this Python has, less STDLIB_LEFT_OUT.

    The frozen app imports the user's model script, which may import any of them, and
    static analysis of the app itself cannot know which.
    """
    return [
        name
        for name in sorted(sys.stdlib_module_names)
        if not name.startswith("_") and name not in STDLIB_LEFT_OUT and importlib.util.find_spec(name) is not None
    ]


def _to_strip(entry: tuple) -> bool:
    dest, _source, typecode = entry
    dest = _posix(dest)
    return typecode == "BINARY" and dest.startswith(STRIP_DIRS) and ".so" in pathlib.PurePosixPath(dest).name


def strip_binaries(binaries: Iterable[tuple], workdir: str | os.PathLike, strip: str | None = None) -> list[tuple]:
    """The TOC with the STRIP_DIRS libraries replaced by stripped copies made under workdir.

    The copies are remade only when the source is newer. Where no `strip` program is found
    (or on Windows and macOS) the TOC comes back unchanged, with a note on stderr.
    """
    binaries = list(binaries)
    strip = strip or shutil.which("strip")
    if strip is None or not sys.platform.startswith("linux"):
        print("bundle_rules: not stripping torch's libraries (no strip program or not Linux)", file=sys.stderr)
        return binaries
    out = []
    for entry in binaries:
        if not _to_strip(entry):
            out.append(entry)
            continue
        dest, source, typecode = entry
        target = pathlib.Path(workdir, "stripped", _posix(dest))
        if not target.exists() or target.stat().st_mtime < pathlib.Path(source).stat().st_mtime:
            target.parent.mkdir(parents=True, exist_ok=True)
            subprocess.run([strip, "--strip-unneeded", "-o", str(target), source], check=True)
        out.append((dest, str(target), typecode))
    return out
