"""``mono-quant inspect FILE [--json] [--verify]``: metadata, layers and sizes of a quantized file."""

from __future__ import annotations

import argparse
import json
import os

from ..errors import QuantizedFileError
from ..inspect_file import format_inspect, inspect_file
from .arguments import add_debug

EXAMPLES = """\
examples:
  mono-quant inspect model.int8.safetensors
  mono-quant inspect model.int8.pt --json | python -m json.tool
  mono-quant inspect model.int8.safetensors --verify

exit status: 0 success, 2 the file is missing, corrupt (with --verify: its content
differs from the SHA-256 hashes recorded when it was written) or not a mono-quant file
"""


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``inspect``."""
    p = commands.add_parser(
        "inspect",
        help="show what a quantized file holds",
        epilog=EXAMPLES,
        description="Show the metadata, layers and sizes of a file written by mono-quant.",
    )
    p.set_defaults(command=run)
    p.add_argument(
        "file", metavar="FILE", help="a .safetensors or .pt file written by mono-quant (or a sharded output's index)"
    )
    p.add_argument("--json", action="store_true", help="print machine-readable JSON")
    p.add_argument(
        "--verify",
        action="store_true",
        help="read every tensor and check the SHA-256 hashes recorded in the file (exit 2 on a mismatch)",
    )
    add_debug(p)


def run(args: argparse.Namespace) -> int:
    """Print what the file holds, as text or JSON."""
    from ..serialization.read import resolve

    if not os.path.isfile(args.file) and resolve(args.file) == args.file:  # a sharded output's folder or name
        what = "is a folder, not a file" if os.path.isdir(args.file) else "no such file"
        raise QuantizedFileError(f"{args.file}: {what}")
    info = inspect_file(args.file, verify=args.verify)
    print(json.dumps(info, indent=2, allow_nan=False) if args.json else format_inspect(info))
    return 0
