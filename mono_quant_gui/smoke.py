"""``mono-quant-gui --smoke-test``: does this installation work?  (Also run on the frozen app.)

Opens the main window, loads the bundled CNN demo with its calibration
preview, quantizes it once (well under a second), checks that the user guide
is bundled, prints one line and exits: 0 when everything worked, 1 with the
error otherwise, 1 after a hard timeout.  Without a display on Linux the
window is drawn offscreen.  Settings and the queue live in a temporary folder,
so a smoke test never touches the user's own.
"""

from __future__ import annotations

import faulthandler
import math
import os
import sys
import tempfile
import threading
import time
from typing import Any

#: Seconds after which the smoke test gives up (a watchdog thread, so even a hung event loop ends).
TIMEOUT_S = 120.0
OK_PREFIX = "smoke test ok:"
FAILED_PREFIX = "smoke test failed:"


def use_offscreen_without_display(environ: dict[str, str] | None = None) -> bool:
    """On Linux with no X11/Wayland display and no platform chosen, use Qt's offscreen platform.

    Must run before the QApplication is created; returns True when it chose offscreen.
    """
    env = os.environ if environ is None else environ
    if (
        sys.platform.startswith("linux")
        and not env.get("QT_QPA_PLATFORM")
        and not env.get("DISPLAY")
        and not env.get("WAYLAND_DISPLAY")
    ):
        env["QT_QPA_PLATFORM"] = "offscreen"
        return True
    return False


def _say(text: str, error: bool = False) -> None:
    stream = sys.stderr if error else sys.stdout
    if stream is not None:  # a windowed frozen app may have no console
        print(text, file=stream, flush=True)


def _watchdog(timeout_s: float) -> threading.Timer:
    def expire() -> None:
        _say(f"{FAILED_PREFIX} timed out after {timeout_s:g} s", error=True)
        if sys.stderr is not None:
            faulthandler.dump_traceback(sys.stderr)
        os._exit(1)

    timer = threading.Timer(timeout_s, expire)
    timer.daemon = True
    timer.start()
    return timer


def run(timeout_s: float | None = None) -> int:
    """The smoke test; returns the exit status."""
    timeout_s = TIMEOUT_S if timeout_s is None else timeout_s
    watchdog = _watchdog(timeout_s)
    use_offscreen_without_display()
    with tempfile.TemporaryDirectory(prefix="mono-quant-smoke-") as scratch:
        try:
            return _run(scratch)
        except Exception as exc:
            _say(f"{FAILED_PREFIX} {type(exc).__name__}: {exc}", error=True)
            return 1
        finally:
            watchdog.cancel()


def _quiet_offscreen_warnings() -> None:
    """The offscreen platform warns about window hints it ignores; keep every other Qt message."""
    from PySide6.QtCore import qInstallMessageHandler

    def handler(_kind, _context, message: str) -> None:
        if "propagateSizeHints" not in message:
            _say(message, error=True)

    qInstallMessageHandler(handler)


def _run(scratch: str) -> int:
    from PySide6.QtCore import QSettings, QTimer

    if os.environ.get("QT_QPA_PLATFORM") == "offscreen":
        _quiet_offscreen_warnings()

    QSettings.setDefaultFormat(QSettings.Format.IniFormat)
    QSettings.setPath(QSettings.Format.IniFormat, QSettings.Scope.UserScope, os.path.join(scratch, "settings"))

    from mono_quant_gui.app import create_application
    from mono_quant_gui.queue import QueueStore
    from mono_quant_gui.window import help_menu
    from mono_quant_gui.window.main_window import MainWindow

    app = create_application()
    window = MainWindow(queue_store=QueueStore(os.path.join(scratch, "queue.json")))
    state: dict[str, Any] = {"stage": "loading", "status": None, "times": {}}
    started = time.perf_counter()

    def finish(status: int, line: str) -> None:
        if state["status"] is not None:
            return
        state["status"] = status
        _say(line, error=status != 0)
        window.close()
        app.exit(status)

    def fail(message: str) -> None:
        finish(1, f"{FAILED_PREFIX} {message.splitlines()[0] if message else 'unknown error'}")

    def unexpected(kind, value, tb) -> None:  # an exception in a slot on the GUI thread
        fail(f"{kind.__name__}: {value}")

    def idle(busy: bool) -> None:
        if busy or state["status"] is not None:
            return
        try:
            advance()
        except Exception as exc:
            fail(f"{type(exc).__name__}: {exc}")

    def advance() -> None:
        s = window.session
        if state["stage"] == "loading":
            if s.loaded is None:
                return fail("the demo did not load")
            if window.calibration_panel.table.rowCount() == 0:
                return fail("the demo's calibration preview is empty")
            state["times"]["load"] = time.perf_counter() - started
            if not window.commands.quantize.isEnabled():
                return fail(f"Quantize is unavailable: {window.commands.quantize.toolTip()}")
            state["stage"], state["quantize_start"] = "quantizing", time.perf_counter()
            window.start_quantize()
        elif state["stage"] == "quantizing":
            if s.result is None:
                return fail("the quantization ended without a result")
            sqnr = s.result.report.output_sqnr_db
            if sqnr is None or not math.isfinite(sqnr):
                return fail(f"the quantized demo's output SQNR is {sqnr}")
            guide = help_menu.user_guide_path()
            versions = help_menu.versions()
            missing = [name for name, version in versions.items() if version == help_menu.UNKNOWN]
            if missing:
                return fail(f"no version metadata for {', '.join(missing)}")
            quantized_s = time.perf_counter() - state["quantize_start"]
            finish(
                0,
                f"{OK_PREFIX} {len(s.rows)} modules, demo loaded in {state['times']['load']:.1f} s, "
                f"quantized in {quantized_s:.1f} s (output SQNR {sqnr:.1f} dB), user guide {guide.name}, "
                f"torch {versions['torch']}, Qt {versions['Qt']}",
            )

    sys.excepthook = unexpected
    window.runner.errored.connect(lambda message, _details: fail(message))
    window.runner.busy_changed.connect(idle)
    window.show()
    QTimer.singleShot(0, lambda: window.open_demo("cnn"))
    code = app.exec()
    return code if state["status"] is None else state["status"]
