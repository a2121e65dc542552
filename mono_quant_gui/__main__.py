"""``mono-quant-gui [--demo [cnn|transformer]] [--script S] [--checkpoint C] [--calib DIR] [--smoke-test] [PATH…]``.

Paths may be a model script, checkpoints, a calibration folder or job files
(``JOB.toml`` is queued and opened in the window; see ``handle_paths``).
"""

from __future__ import annotations

import argparse
import sys

from mono_quant_gui import identity


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog=identity.EXECUTABLE, description=identity.SUMMARY)
    parser.add_argument(
        "--demo", nargs="?", const="cnn", choices=("cnn", "transformer"), help="open a bundled example (default: cnn)"
    )
    parser.add_argument("--script", help="the Python script that defines the model")
    parser.add_argument("--entry", help="which model of the script to build, when it defines several")
    parser.add_argument("--checkpoint", help="weights to load into the model")
    parser.add_argument("--calib", help="folder of calibration samples")
    parser.add_argument("--version", action="version", version=f"%(prog)s {identity.VERSION}")
    parser.add_argument(
        "--smoke-test",
        action="store_true",
        help="open the window, load and quantize the demo, print one line and exit "
        "(0: this installation works); offscreen when there is no display",
    )
    parser.add_argument(
        "paths", nargs="*", metavar="PATH", help="model script, checkpoint, calibration folder or job file"
    )
    return parser.parse_args(argv)


def apply_args(window, args: argparse.Namespace) -> None:
    """Open what the command line names (in the background, after the window is up)."""
    if args.demo:
        window.open_demo(args.demo)
    if args.calib:
        window.set_calibration_folder(args.calib)
    if args.script:
        window.open_script(args.script, args.checkpoint, args.entry)
    elif args.checkpoint:
        window.open_checkpoint(args.checkpoint)
    if args.paths:
        window.handle_paths(args.paths)


def main(argv: list[str] | None = None) -> int:
    """Start the application; returns its exit status."""
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.smoke_test:
        from mono_quant_gui import smoke

        return smoke.run()
    from mono_quant_gui.platform_check import exit_if_no_platform

    exit_if_no_platform()  # before Qt is imported: a missing library can make the import itself fail
    from PySide6.QtCore import QTimer

    from mono_quant_gui.app import create_application, install_excepthook
    from mono_quant_gui.window.main_window import MainWindow

    app = create_application()
    window = MainWindow()
    install_excepthook(window)
    window.show()
    # Start loading once the event loop runs, so the window is painted first.
    QTimer.singleShot(0, lambda: apply_args(window, args))
    return app.exec()


if __name__ == "__main__":
    sys.exit(main())
