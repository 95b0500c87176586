"""The ``tokenalign`` command line.

Each subcommand lives in its own module under :mod:`tokenalign.commands` and exposes
``register(subparsers)``; this file only wires them together, turns user errors
(:class:`~tokenalign.errors.TokenalignError`) into one-line messages with exit status 2,
and sets up logging. Command modules import heavy libraries (torch, transformers) inside
their ``run`` functions so that ``tokenalign --help`` stays instant.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from tokenalign import __version__
from tokenalign.errors import TokenalignError

# Order is the order shown in --help.
COMMAND_MODULES = (
    "demo",
    "data",
    "reward",
    "show",
    "pretrain",
    "train",
    "align",
    "eval",
    "config",
)

DESCRIPTION = """\
tokenalign: align language models with token-level guidance grounded in preferences.

Preferences arrive per sequence (pairs, rankings, minimal edits, scored text);
tokenalign learns where in a response they come from and trains the model per token.
Run `tokenalign demo` for the one-command showcase on the built-in pep8 task.
"""


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser, with one subparser per command module."""
    parser = argparse.ArgumentParser(
        prog="tokenalign",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"tokenalign {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv for debug)")
    parser.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", title="commands")
    for name in COMMAND_MODULES:
        module = importlib.import_module(f"tokenalign.commands.{name}")
        module.register(subparsers)
    return parser


def _end_processes() -> None:
    """Under a launcher (torchrun, ``accelerate launch``): wait for every process, then take
    the process group down before the interpreter exits (a live gloo group can abort it)."""
    import os

    if int(os.environ.get("WORLD_SIZE", "1") or 1) > 1:
        from tokenalign.utils.accel import end_processes

        end_processes()


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``tokenalign`` console script; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0 if args.command is None else 2
    from tokenalign.utils.logging import setup_logging

    setup_logging(-1 if args.quiet else args.verbose)
    try:
        from tokenalign.utils.accel import check_launcher

        check_launcher()
        status = int(args.func(args) or 0)
        _end_processes()
        return status
    except TokenalignError as err:
        print(f"tokenalign {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        logging.getLogger("tokenalign").warning("interrupted")
        return 130


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
