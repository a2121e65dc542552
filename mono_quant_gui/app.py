"""The QApplication: identity, style and plot defaults, and the main window with its start-up arguments."""

from __future__ import annotations

import logging
import sys
import traceback

from PySide6.QtWidgets import QApplication, QWidget

from mono_quant_gui import identity


def create_application(argv: list[str] | None = None) -> QApplication:
    """The one QApplication, named so QSettings and the desktop find it; reused when it exists."""
    app = QApplication.instance()
    if app is None:
        app = QApplication(list(argv if argv is not None else sys.argv[:1]))
        app.setOrganizationName(identity.ORG_NAME)
        app.setOrganizationDomain(identity.ORG_DOMAIN)
        app.setApplicationName(identity.APP_NAME)
    app.setApplicationDisplayName(identity.DISPLAY_NAME)
    app.setApplicationVersion(identity.VERSION)
    app.setDesktopFileName(identity.APP_ID)
    configure_plots()
    install_garbage_collector()
    return app


_COLLECTOR = None


def install_garbage_collector() -> None:
    """Collect garbage on the GUI thread only, once per process (idempotent).

    Python's automatic collection runs on whichever thread happens to allocate,
    and a collection on a worker thread can free a Qt object off its own thread
    (a crash).  pyqtgraph's GarbageCollector turns automatic collection off and
    collects on a 1 s timer on the GUI thread; ``worker.Runner`` also collects
    fully when it falls idle.  Call it on the GUI thread, with a QApplication.
    """
    global _COLLECTOR
    if _COLLECTOR is None:
        from pyqtgraph.util.garbage_collector import GarbageCollector

        _COLLECTOR = GarbageCollector(interval=1.0)


def configure_plots() -> None:
    """pyqtgraph defaults that follow the palette (called once a QApplication exists)."""
    import pyqtgraph as pg

    from mono_quant_gui.window.colors import plot_background, plot_foreground

    pg.setConfigOptions(antialias=True, background=plot_background(), foreground=plot_foreground())


def install_excepthook(window: QWidget) -> None:
    """Show an unexpected exception of a GUI-thread slot in a dialog and the log instead of losing it."""
    from mono_quant_gui.window import dialogs

    def hook(kind, value, tb) -> None:
        details = "".join(traceback.format_exception(kind, value, tb))
        logging.getLogger("mono_quant_gui").error("unexpected error: %s: %s", kind.__name__, value)
        dialogs.show_error(window, "Unexpected error", f"{kind.__name__}: {value}", details)

    sys.excepthook = hook
