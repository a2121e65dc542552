"""The committed .desktop and metainfo files pass Debian's validators (desktop-file-utils, appstream).

The validators are required: .ci/run installs them with apt-get. A missing one fails, never skips.
"""

from __future__ import annotations

import os
import pathlib
import shutil
import subprocess

import pytest

from mono_quant_gui import identity

ROOT = pathlib.Path(__file__).resolve().parents[1]
LINUX_DIR = ROOT / "resources" / "linux"


def _tool(name: str, package: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is not installed: apt-get install {package} (.ci/run does this)")
    return path


def _run(*cmd: str) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60)


def test_desktop_file_validates():
    out = _run(_tool("desktop-file-validate", "desktop-file-utils"), str(LINUX_DIR / identity.DESKTOP_FILE))
    # Silence means valid with no warnings and no hints.
    assert (out.returncode, out.stdout + out.stderr) == (0, "")


def test_metainfo_validates():
    out = _run(_tool("appstreamcli", "appstream"), "validate", "--no-net", str(LINUX_DIR / identity.METAINFO_FILE))
    assert out.returncode == 0, out.stdout + out.stderr
    # Errors (E:) and warnings (W:) both count; infos (I:) may differ between appstream versions.
    problems = [line for line in out.stdout.splitlines() if line.startswith(("E:", "W:"))]
    assert problems == []


def test_install_script_puts_a_valid_entry_and_icons_in_the_data_folder(tmp_path):
    # A stand-in for build/dist/mono-quant: the frozen layout with the real resources.
    dist = tmp_path / "dist" / "mono quant"
    (dist / "_internal" / "mono_quant_gui").mkdir(parents=True)
    (dist / "_internal" / "mono_quant_gui" / "resources").symlink_to(ROOT / "resources")
    (dist / identity.EXECUTABLE).write_text("#!/bin/sh\n")
    (dist / identity.EXECUTABLE).chmod(0o755)
    data = tmp_path / "share"
    env = {**os.environ, "XDG_DATA_HOME": str(data), "PATH": "/usr/bin:/bin"}
    script = str(ROOT / "packaging" / "install-desktop.sh")

    done = subprocess.run(["bash", script, str(dist)], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    entry = data / "applications" / identity.DESKTOP_FILE
    assert f'Exec="{dist}/{identity.EXECUTABLE}" %F' in entry.read_text().splitlines()
    out = _run(_tool("desktop-file-validate", "desktop-file-utils"), str(entry))
    assert (out.returncode, out.stdout + out.stderr) == (0, "")
    assert (data / "metainfo" / identity.METAINFO_FILE).is_file()
    assert (data / "icons" / "hicolor" / "scalable" / "apps" / f"{identity.APP_ID}.svg").is_file()
    for size in identity.ICON_SIZES:
        icon = data / "icons" / "hicolor" / f"{size}x{size}" / "apps" / f"{identity.APP_ID}.png"
        assert icon.read_bytes() == identity.icon_path(size).read_bytes()

    undone = subprocess.run(
        ["bash", script, "--uninstall", str(dist)], env=env, capture_output=True, text=True, timeout=60
    )
    assert undone.returncode == 0, undone.stderr
    assert [p for p in data.rglob("*") if p.is_file() and identity.APP_ID in p.name] == []
