"""``tokenalign config``: print a command's default config, or validate a config file."""

from __future__ import annotations

import argparse
import importlib
from typing import Any

from tokenalign.commands import HELP_FORMATTER, add_config_arguments
from tokenalign.errors import ConfigError

# Config kind -> "module:Class". Imported lazily so --help stays fast.
CONFIG_KINDS: dict[str, str] = {
    "demo": "tokenalign.jobs.demo:DemoConfig",
    "pretrain": "tokenalign.tasks.pep8.pretrain:PretrainConfig",
    "reward": "tokenalign.jobs.reward:RewardRunConfig",
    "train": "tokenalign.jobs.train:TrainConfig",
    "align": "tokenalign.jobs.align:AlignConfig",
    "eval": "tokenalign.jobs.eval:EvalConfig",
}


def config_class(kind: str) -> type:
    """The dataclass registered for ``kind`` (ConfigError when unknown)."""
    if kind not in CONFIG_KINDS:
        raise ConfigError(f"unknown config kind '{kind}'; known: {', '.join(CONFIG_KINDS)}")
    module_name, cls_name = CONFIG_KINDS[kind].split(":")
    return getattr(importlib.import_module(module_name), cls_name)


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "config",
        help="print a default config as YAML, or check a config file",
        description=(
            "Print the default config of a command as YAML (copy it, edit it, pass it with -c),\n"
            "or with -c/--set check a config file and print it with overrides applied.\n\n"
            "examples:\n"
            "  tokenalign config demo > my-demo.yaml\n"
            "  tokenalign config demo -c my-demo.yaml --set sampling.temperature=0.9"
        ),
        formatter_class=HELP_FORMATTER,
    )
    parser.add_argument("kind", choices=sorted(CONFIG_KINDS), help="which command's config")
    add_config_arguments(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from tokenalign.config import config_to_yaml, load_config

    cfg = load_config(config_class(args.kind), args.config, args.overrides)
    print(config_to_yaml(cfg), end="")
    return 0
