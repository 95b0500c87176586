"""One module per CLI subcommand, each with ``register(subparsers)``.

A command module keeps heavy imports inside its ``run`` function so that building the
parser (``tokenalign --help``) does not import torch.
"""

from __future__ import annotations

import argparse

HELP_FORMATTER = argparse.RawDescriptionHelpFormatter


def add_config_arguments(parser: argparse.ArgumentParser, resumable: bool = False) -> None:
    """The shared ``-c/--config`` and ``--set`` options of every config-driven command;
    ``resumable`` (commands that resume a run folder): ``--allow-config-change`` too."""
    parser.add_argument("-c", "--config", metavar="YAML", help="config file (YAML); defaults apply to keys it omits")
    parser.add_argument(
        "--set",
        dest="overrides",
        metavar="KEY=VALUE",
        action="append",
        default=[],
        help="override one config value, e.g. --set sampling.temperature=0.7 (repeatable; values are YAML)",
    )
    if resumable:
        parser.add_argument(
            "--allow-config-change",
            action="store_true",
            help="resume the run in out_dir even though this config differs from the one it started with "
            "(by default that stops, listing the differences; see docs/reliability.md)",
        )
