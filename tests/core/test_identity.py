"""One application identity: the desktop files, the build spec and the icons all follow identity.py (no Qt)."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import pathlib
import re
import struct
import subprocess
import sys
import tomllib
import xml.etree.ElementTree as ET

ROOT = pathlib.Path(__file__).resolve().parents[2]
APP_DIR = ROOT / "resources" / "app"
LINUX_DIR = ROOT / "resources" / "linux"


def _load(path: pathlib.Path, name: str):
    # By path: the Qt-hidden core run blocks `import mono_quant_gui`, and identity.py needs no Qt.
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _identity():
    return _load(ROOT / "mono_quant_gui" / "identity.py", "_identity_under_test")


def test_app_id_and_names_are_the_agreed_ones():
    ident = _identity()
    assert ident.APP_ID == "io.github.monoquant.MonoQuant"
    assert re.fullmatch(r"[a-z][a-z0-9]*(\.[A-Za-z][A-Za-z0-9_]*){2,}", ident.APP_ID)
    assert (ident.APP_NAME, ident.ORG_NAME) == ("mono-quant", "mono-quant")
    assert ident.DESKTOP_FILE == "io.github.monoquant.MonoQuant.desktop"
    assert ident.METAINFO_FILE == "io.github.monoquant.MonoQuant.metainfo.xml"
    assert ident.ICON_SIZES == (16, 32, 48, 64, 128, 256, 512)


def test_executable_is_the_declared_gui_script():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    ident = _identity()
    assert project["gui-scripts"][ident.EXECUTABLE] == "mono_quant_gui.__main__:main"
    assert project["name"] == ident.APP_NAME


def test_version_comes_from_the_installed_metadata():
    pyproject_version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert pyproject_version == _identity().VERSION


def test_version_falls_back_without_metadata(monkeypatch):
    def missing(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "version", missing)
    assert _identity().VERSION == "0.0.0+unknown"


def test_identity_imports_without_qt():
    code = (
        "import sys, mono_quant_gui.identity; "
        "print(sorted(m for m in sys.modules if m.startswith(('PySide6', 'pyqtgraph'))))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "[]"


def test_committed_desktop_files_are_what_the_generator_writes_now():
    tool = _load(ROOT / "tools" / "make_desktop_files.py", "_make_desktop_files_under_test")
    ident = _identity()
    expected = tool.generated(ident)
    assert sorted(p.name for p in expected) == sorted(p.name for p in LINUX_DIR.iterdir())
    for path, text in expected.items():
        assert path.read_text(encoding="utf-8") == text, f"{path.name} is stale: run python tools/make_desktop_files.py"


def test_desktop_entry_names_the_app_id_and_executable():
    ident = _identity()
    entry = dict(
        line.split("=", 1) for line in (LINUX_DIR / ident.DESKTOP_FILE).read_text().splitlines() if "=" in line
    )
    assert entry["Icon"] == ident.APP_ID
    assert entry["Exec"].split()[0] == ident.EXECUTABLE
    assert entry["Name"] == ident.DISPLAY_NAME


def test_metainfo_names_the_app_id_launchable_and_version():
    ident = _identity()
    root = ET.parse(LINUX_DIR / ident.METAINFO_FILE).getroot()
    assert root.tag == "component" and root.get("type") == "desktop-application"
    assert root.findtext("id") == ident.APP_ID
    assert root.findtext("launchable") == ident.DESKTOP_FILE
    assert root.findtext("icon") == ident.APP_ID
    assert root.findtext("provides/binary") == ident.EXECUTABLE
    assert root.find("releases/release").get("version") == ident.VERSION


def test_build_spec_takes_its_names_from_identity():
    spec = (ROOT / "packaging" / "mono-quant.spec").read_text()
    assert "from mono_quant_gui import identity" in spec
    assert "name=identity.EXECUTABLE" in spec and "name=identity.APP_NAME" in spec
    assert "bundle_identifier=identity.APP_ID" in spec
    ident = _identity()
    for literal in (ident.APP_ID, ident.EXECUTABLE, f'"{ident.APP_NAME}"'):
        assert literal not in spec, f"the spec spells {literal} itself instead of reading identity.py"
    launch = (ROOT / "packaging" / "launch.py").read_text()
    assert "from mono_quant_gui.__main__ import main" in launch


def test_png_icons_exist_at_every_size_with_alpha():
    for size in _identity().ICON_SIZES:
        data = (APP_DIR / f"icon-{size}.png").read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n", f"icon-{size}.png is not a PNG"
        length, chunk, width, height, depth, colour = struct.unpack(">I4sIIBB", data[8:26])
        assert (length, chunk) == (13, b"IHDR")
        assert (width, height) == (size, size), f"icon-{size}.png is {width}x{height}"
        assert (depth, colour) == (8, 6), f"icon-{size}.png is not 8-bit RGBA"
        assert data[-12:] == b"\x00\x00\x00\x00IEND\xaeB`\x82", f"icon-{size}.png is truncated"


def test_svg_icon_is_a_square_svg():
    root = ET.parse(APP_DIR / "icon.svg").getroot()
    assert root.tag == "{http://www.w3.org/2000/svg}svg"
    assert root.get("viewBox") == "0 0 512 512"
    assert sorted(p.name for p in APP_DIR.iterdir()) == sorted(
        ["icon.svg"] + [f"icon-{s}.png" for s in _identity().ICON_SIZES]
    )
