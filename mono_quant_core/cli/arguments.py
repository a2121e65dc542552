"""The argparse pieces every command shares: one-line usage errors, examples in --help, --debug."""

from __future__ import annotations

import argparse
from typing import Any, NoReturn

from ..errors import ConfigError


class UsageError(Exception):
    """A command line argparse rejected; ``prog`` names the command for the --help hint."""

    def __init__(self, message: str, prog: str) -> None:
        super().__init__(message)
        self.prog = prog


class ArgumentParser(argparse.ArgumentParser):
    """Raises UsageError instead of printing usage and exiting, so main() owns the exit code."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("allow_abbrev", False)
        kwargs.setdefault("formatter_class", argparse.RawDescriptionHelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        raise UsageError(message, self.prog)


def add_debug(parser: argparse.ArgumentParser) -> None:
    """``--debug``: show the Python traceback of an error."""
    parser.add_argument("--debug", action="store_true", help="on an error, also print the Python traceback")


def canonical(value: str) -> str:
    """Accept ``per_channel`` and ``Per-Channel`` for ``per-channel`` (as QuantConfig does)."""
    return value.strip().lower().replace("_", "-")


def positive_int(text: str) -> int:
    """An argparse type: an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} must be >= 1")
    return value


def natural_int(text: str) -> int:
    """An argparse type: an integer >= 0."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{value} must be >= 0")
    return value


def add_ray(parser: argparse.ArgumentParser, what: str) -> argparse._ArgumentGroup:
    """``--ray ADDRESS`` and ``--retries N``: run ``what`` on a Ray cluster (docs/queue.md)."""
    group = parser.add_argument_group("Ray cluster (pip install 'mono-quant[cluster]')")
    group.add_argument(
        "--ray",
        metavar="ADDRESS",
        help=f"run {what} on a Ray cluster: local (a private instance on this computer), auto "
        "(the cluster this machine belongs to) or ray://host:port",
    )
    group.add_argument(
        "--retries",
        type=natural_int,
        default=None,
        metavar="N",
        help="with --ray: run a task whose worker died again, up to N times (default 1)",
    )
    return group


def ray_retries(args: argparse.Namespace) -> int:
    """``--retries`` (1 when not given); refused without ``--ray``, where it would do nothing."""
    if args.ray is None and args.retries is not None:
        raise ConfigError("--retries: retries tasks on a Ray cluster; give --ray ADDRESS too", key="--retries")
    return 1 if args.retries is None else int(args.retries)
