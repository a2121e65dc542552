"""Help → About lists the versions it runs on (without importing torch); Help → User Guide opens the bundled guide."""

from __future__ import annotations

import importlib.metadata
import re
import subprocess
import sys
import zipfile
from pathlib import Path

from PySide6.QtCore import QUrl, qVersion
from PySide6.QtGui import QDesktopServices

from mono_quant_gui import identity
from mono_quant_gui.window import help_menu


def pyside_version() -> str:
    try:
        return importlib.metadata.version("PySide6")
    except importlib.metadata.PackageNotFoundError:
        return importlib.metadata.version("PySide6-Essentials")


def test_about_lists_the_versions(window):
    window.commands.about.trigger()
    box = window.about_box
    assert box.isVisible() and box.windowTitle() == "About mono-quant"
    text = box.text()
    for name, version in (
        ("mono-quant", importlib.metadata.version("mono-quant")),
        ("torch", importlib.metadata.version("torch")),
        ("PySide6", pyside_version()),
        ("Qt", qVersion()),
        ("safetensors", importlib.metadata.version("safetensors")),
    ):
        assert name in text and version in text, (name, version)
    assert help_menu.versions()["torch"] == importlib.metadata.version("torch")
    assert identity.LICENSE in text
    box.close()


def test_the_about_text_does_not_import_torch():
    code = (
        "import sys; from mono_quant_gui.window import help_menu; text = help_menu.about_html(); "
        "print('torch' in sys.modules, help_menu.versions()['torch'] in text)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert done.stdout.split() == ["False", "True"]


def test_user_guide_opens_the_bundled_html(window, monkeypatch):
    opened: list[QUrl] = []
    monkeypatch.setattr(QDesktopServices, "openUrl", lambda url: opened.append(QUrl(url)) or True)
    window.commands.documentation.trigger()
    (url,) = opened
    assert url.isLocalFile()
    path = Path(url.toLocalFile())
    assert path.is_file() and path.name == "user-guide.html" and path.parent.name == "docs"
    page = path.read_text(encoding="utf-8")
    assert "<title>" in page
    images = re.findall(r'<img src="([^"]+)"', page)
    assert all((path.parent / image).is_file() for image in images), images  # copied next to the page
    assert window.commands.documentation.shortcut().toString() == "F1"


def test_user_guide_that_cannot_be_opened_says_where_it_is(window, monkeypatch):
    monkeypatch.setattr(QDesktopServices, "openUrl", lambda url: False)
    window.open_documentation()
    assert window.last_error.windowTitle() == "User guide"
    assert str(help_menu.user_guide_path()) in window.last_error.text()
    window.last_error.close()


def test_user_guide_inside_a_zip_is_copied_out(tmp_path, monkeypatch):
    archive = tmp_path / "resources.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("docs/user-guide.html", "<html><img src='screenshots/a.png'></html>")
        z.writestr("docs/screenshots/a.png", b"\x89PNG fake")
    monkeypatch.setattr(help_menu.importlib.resources, "files", lambda package: zipfile.Path(archive))
    monkeypatch.setattr(help_menu, "_extracted", None)
    path = help_menu.user_guide_path()
    assert path.is_file() and not str(path).startswith(str(archive))
    assert path.read_text() == "<html><img src='screenshots/a.png'></html>"
    assert (path.parent / "screenshots" / "a.png").read_bytes() == b"\x89PNG fake"
    assert help_menu.user_guide_path() == path  # copied once


def test_a_missing_user_guide_is_an_error_dialog(window, tmp_path, monkeypatch):
    monkeypatch.setattr(help_menu.importlib.resources, "files", lambda package: tmp_path)
    opened = []
    monkeypatch.setattr(QDesktopServices, "openUrl", lambda url: opened.append(url) or True)
    window.commands.documentation.trigger()
    assert opened == []
    assert "the user guide (docs/user-guide.html) is missing" in window.last_error.text()
    window.last_error.close()
