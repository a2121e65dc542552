"""Entry point of ``mono-quant``: parse, dispatch to a command, turn errors into exit codes.

Exit status: 0 success; 1 a job or its validation failed; 2 bad usage or input
(argparse errors and every MonoQuantError but ValidationFailed); 130 Ctrl-C.
"""

from __future__ import annotations

import sys
import traceback
from collections.abc import Sequence

from .. import __version__
from ..errors import Cancelled, MonoQuantError, ValidationFailed
from . import cmd_export, cmd_inspect, cmd_quantize, cmd_run, cmd_sensitivity
from .arguments import ArgumentParser, UsageError

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130

EXAMPLES = """\
examples:
  mono-quant quantize --script model.py --checkpoint ckpt.pt --out model.int8.safetensors
  mono-quant sensitivity --script model.py --checkpoint ckpt.pt --calib calib/ --report sens.json
  mono-quant run job.toml other.toml
  mono-quant inspect model.int8.safetensors
  mono-quant export model.int8.safetensors --script model.py --to onnx --example calib/x0.pt --out model.onnx
  mono-quant export model.int8.safetensors --script model.py --to compressed-tensors --out model-ct/

'mono-quant COMMAND --help' shows the flags and examples of each command.
exit status: 0 success, 1 a job or validation failed, 2 bad usage or input
"""


def build_parser() -> ArgumentParser:
    """The ``mono-quant`` parser with its commands."""
    parser = ArgumentParser(
        prog="mono-quant", epilog=EXAMPLES, description="Post-training quantization of PyTorch models."
    )
    parser.add_argument("--version", action="version", version=f"mono-quant {__version__}")
    commands = parser.add_subparsers(title="commands", metavar="COMMAND", required=True)
    for command in (cmd_quantize, cmd_sensitivity, cmd_run, cmd_inspect, cmd_export):
        command.add_parser(commands)
    return parser


def exit_code(exc: BaseException) -> int:
    """The exit status for an error that ended a command."""
    if isinstance(exc, (ValidationFailed, Cancelled)):
        return EXIT_FAILED
    if isinstance(exc, (MonoQuantError, OSError)):
        return EXIT_USAGE
    return EXIT_FAILED


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``mono-quant`` with ``argv`` (default: ``sys.argv[1:]``) and return the exit status."""
    try:
        args = build_parser().parse_args(argv)
    except UsageError as exc:
        _error(f"{exc} (see '{exc.prog} --help')")
        return EXIT_USAGE
    except SystemExit as exc:  # --help and --version exit through argparse
        return exc.code if isinstance(exc.code, int) else EXIT_OK
    try:
        return args.command(args)
    except KeyboardInterrupt:
        _error("interrupted")
        return EXIT_INTERRUPTED
    except Exception as exc:
        if args.debug:
            traceback.print_exc()
        if isinstance(exc, (MonoQuantError, OSError)):
            _error(str(exc))
        else:
            _error(f"unexpected {type(exc).__name__}: {exc} (run again with --debug for the traceback)")
        return exit_code(exc)


def _error(message: str) -> None:
    print(f"mono-quant: error: {message}", file=sys.stderr)
