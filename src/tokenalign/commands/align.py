"""``tokenalign align``: the alternating guidance <-> policy loop (Yang et al., NeurIPS 2023)."""

from __future__ import annotations

import argparse
from typing import Any

from tokenalign.commands import HELP_FORMATTER, add_config_arguments

DESCRIPTION = """\
Preference-grounded token guidance, alternated with policy training (Yang et al. 2023):
sample K responses per prompt from the policy, rank them with the scorer (policy.scorer;
default: the task's), re-learn the token reward r_φ on those rankings (warm start, fresh
optimizer), train the policy with r_φ frozen (policy.reward.source=guidance; default:
token REINFORCE with max-entropy, α = 0.125) for relearn_every iterations, and repeat;
re-learning stops after relearn_until iterations. The policy's keys sit under policy.*
(the keys of `tokenalign train`). guidance.data=FILE adds human pairs or ranked lists that
r_φ learns from in every round (without a scorer: guidance.prompts=0, policy.eval.every=0).

The run folder (out_dir) gets what `tokenalign train` writes plus guidance/round-NNN/
(each r_φ, loadable with TokenRewardModel.from_pretrained) and guidance.jsonl.
A killed run resumes from its checkpoint when rerun.

examples:
  tokenalign align --set policy.iterations=40 --set relearn_every=10
  tokenalign align -c examples/align-pep8.yaml
  tokenalign align -c examples/byo-align.yaml       # your model; r_φ also learns your human pairs
  tokenalign config align        # every key with its default
"""


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "align", help="the alternating token-guidance <-> policy loop", description=DESCRIPTION, formatter_class=HELP_FORMATTER
    )
    add_config_arguments(parser, resumable=True)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from tokenalign.commands.train import print_before_after
    from tokenalign.config import load_config
    from tokenalign.jobs.align import AlignConfig, run_align

    cfg = load_config(AlignConfig, args.config, args.overrides)
    print_before_after(run_align(cfg, allow_config_change=args.allow_config_change), cfg.out_dir)
    return 0
