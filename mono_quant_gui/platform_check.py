"""Can Qt open a window here?  Said in words before the QApplication exists, instead of Qt's plugin abort.

Qt-free on purpose: a missing system library can make importing PySide6 itself fail.
"""

from __future__ import annotations

import ctypes
import os
import sys
from collections.abc import Callable, Mapping

#: The X11 (xcb) platform plugin's system libraries that a minimal Linux install may lack: soname → Debian package.
XCB_LIBRARIES = {
    "libxcb-cursor.so.0": "libxcb-cursor0",
    "libxkbcommon-x11.so.0": "libxkbcommon-x11-0",
    "libxcb-icccm.so.4": "libxcb-icccm4",
    "libxcb-keysyms.so.1": "libxcb-keysyms1",
    "libxcb-shape.so.0": "libxcb-shape0",
    "libxcb-randr.so.0": "libxcb-randr0",
    "libxcb-render-util.so.0": "libxcb-render-util0",
    "libxcb-image.so.0": "libxcb-image0",
}
#: Needed by Qt on every Linux platform that draws on a screen.
COMMON_LIBRARIES = {
    "libEGL.so.1": "libegl1",
    "libGL.so.1": "libgl1",
    "libfontconfig.so.1": "libfontconfig1",
    "libdbus-1.so.3": "libdbus-1-3",
}
ALL_PACKAGES = (*XCB_LIBRARIES.values(), *COMMON_LIBRARIES.values())
#: The exit status of mono-quant-gui when no window can be opened.
EXIT_NO_PLATFORM = 2
HEADLESS_HINT = (
    "For headless use set QT_QPA_PLATFORM=offscreen (mono-quant-gui --smoke-test does so itself), "
    "or use the command line: mono-quant --help"
)


def can_load(soname: str) -> bool:
    """True when the dynamic loader finds the shared library ``soname``."""
    try:
        ctypes.CDLL(soname)
    except OSError:
        return False
    return True


def _install_line(packages: list[str] | tuple[str, ...]) -> str:
    return "    sudo apt-get install " + " ".join(packages)


def platform_problem(
    environ: Mapping[str, str] | None = None,
    platform: str | None = None,
    load: Callable[[str], bool] = can_load,
) -> str | None:
    """What keeps Qt from opening a window, with how to fix it; None when nothing is known to be missing.

    Only Linux is checked.  A platform the user chose (QT_QPA_PLATFORM=offscreen, wayland, vnc…) is
    trusted, except xcb, whose libraries are checked.  A Wayland session without xcb's libraries works.
    """
    env = os.environ if environ is None else environ
    if not (platform or sys.platform).startswith("linux"):
        return None
    chosen = env.get("QT_QPA_PLATFORM", "").split(";")[0].split(":")[0].strip()
    if chosen and chosen != "xcb":
        return None
    display, wayland = env.get("DISPLAY"), env.get("WAYLAND_DISPLAY")
    if not chosen and not display and not wayland:
        return (
            "mono-quant-gui: cannot open a window: there is no display "
            "(neither DISPLAY nor WAYLAND_DISPLAY is set, and QT_QPA_PLATFORM is not set).\n"
            "Run it in a desktop session (X11 or Wayland). On Debian/Ubuntu, Qt's X11 platform also needs:\n"
            f"{_install_line(ALL_PACKAGES)}\n"
            f"{HEADLESS_HINT}."
        )
    xcb = chosen == "xcb" or not wayland
    wanted = {**(XCB_LIBRARIES if xcb else {}), **COMMON_LIBRARIES}
    missing = [soname for soname in wanted if not load(soname)]
    if not missing:
        return None
    what = "X11 (xcb) platform" if xcb else "display platform"
    return (
        f"mono-quant-gui: cannot open a window: Qt's {what} needs system libraries that are missing: "
        f"{', '.join(missing)}.\n"
        "On Debian/Ubuntu install them with:\n"
        f"{_install_line([wanted[s] for s in missing])}\n"
        "(all the libraries Qt needs on Linux:\n"
        f"{_install_line(ALL_PACKAGES)})\n"
        f"{HEADLESS_HINT}."
    )


def exit_if_no_platform() -> None:
    """Print :func:`platform_problem`'s message on stderr and exit with status 2 when there is one."""
    problem = platform_problem()
    if problem:
        print(problem, file=sys.stderr, flush=True)
        raise SystemExit(EXIT_NO_PLATFORM)
