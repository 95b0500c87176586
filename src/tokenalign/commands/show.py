"""``tokenalign show``: render a token reward model's rewards on a data file as a heatmap."""

from __future__ import annotations

import argparse
from typing import Any

from tokenalign.commands import HELP_FORMATTER

DESCRIPTION = """\
Score every response of a data file with a trained token reward model and write a
self-contained HTML page colouring each token by its reward (hover for the value).

Responses shown per format: pairs -> chosen and rejected; ranked -> every response (with
its score); edits -> original and edited; supervised -> completion.

example:
  tokenalign show --reward-model runs/reward/model --data runs/demo/ranked.jsonl --format ranked -o rewards.html
"""


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("show", help="token-reward heatmap of a data file", description=DESCRIPTION,
                                   formatter_class=HELP_FORMATTER)
    parser.add_argument("--reward-model", required=True, metavar="DIR", help="folder written by `tokenalign reward`")
    parser.add_argument("--data", required=True, metavar="FILE", help="data file (any supported source)")
    parser.add_argument("--format", default="pairs", choices=["pairs", "ranked", "edits", "supervised"])
    parser.add_argument("-o", "--output", default="token_rewards.html", help="HTML file to write")
    parser.add_argument("--limit", type=int, default=20, help="records to show (default 20)")
    parser.add_argument("--max-length", type=int, default=None, help="truncate longer inputs (tokens)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from tokenalign.jobs.show import run_show

    n = run_show(args.reward_model, args.data, args.format, args.output, args.limit, args.max_length)
    print(f"wrote {args.output} ({n} responses)")
    return 0
