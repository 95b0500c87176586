"""``tokenalign reward``: learn a token-level reward model from preferences."""

from __future__ import annotations

import argparse
from typing import Any

from tokenalign.commands import HELP_FORMATTER, add_config_arguments

DESCRIPTION = """\
Learn a token-level reward model from sequence-level preferences.

  pairs / ranked : token rewards are aggregated (learn.aggregator: sum | avg | softmax |
                   softmin) into sequence scores and trained with the Plackett-Luce loss
                   on the preference order (Bradley-Terry for pairs), ties broken at random.
  edits          : a token classifier on the diff between each original response and its
                   minimal edit (bad / good tokens); use head.bounding=centered_sigmoid for
                   the reward r = 2 p(good) - 1.

The run folder (out_dir) gets config.yaml, metrics.jsonl, checkpoint/ (resumed from
automatically when present) and model/ (load it with TokenRewardModel.from_pretrained).

examples:
  tokenalign reward -c examples/reward-hh-pairs.yaml
  tokenalign reward -c examples/byo-reward.yaml     # your backbone, your human pairs
  tokenalign reward --set data.train=prefs.jsonl --set data.format=pairs --set out_dir=runs/rm
  tokenalign config reward        # every key with its default
"""


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "reward", help="learn a token-level reward model", description=DESCRIPTION, formatter_class=HELP_FORMATTER
    )
    add_config_arguments(parser, resumable=True)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from tokenalign.config import load_config
    from tokenalign.jobs.reward import RewardRunConfig, run_reward

    cfg = load_config(RewardRunConfig, args.config, args.overrides)
    final = run_reward(cfg, allow_config_change=args.allow_config_change)
    from tokenalign.utils.runfolder import is_main_rank

    if not is_main_rank():  # the main process of a launched run prints
        return 0
    table = Table(title=f"reward learning: {cfg.out_dir}")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for k, v in final.items():
        table.add_row(k, f"{v:.4f}" if isinstance(v, float) else str(v))
    Console().print(table)
    return 0
