"""``tokenalign train``: train a policy with one objective on one engine."""

from __future__ import annotations

import argparse
from typing import Any

from tokenalign.commands import HELP_FORMATTER, add_config_arguments

DESCRIPTION = """\
Train a policy on a task's prompts or your own (task=text model=... prompts=FILE: text or
chat messages; docs/bring-your-own.md). One engine; the objective, the scorer, the reward
source and the reward placement are configuration:

  objective=ppo       clipped PPO with a value model, GAE, per-token KL penalty, whitening
  objective=reinforce token REINFORCE with a max-entropy term (entropy_coef; Yang et al.: 0.125)
  objective=rloo      sequence REINFORCE with the leave-one-out baseline over K samples
  objective=wmle      guidance-weighted MLE on a supervised dataset (wmle.data=FILE)
  objective=dpg       distribution matching to an EBM target (GDC++; dm.offline=true: proposal q)
  objective=fdpg      f-DPG: dm.divergence=kl | rkl | js | tv
  objective=cdpg      conditional DPG with a per-prompt Z_c (dm.target=constraint)
  objective=phf-mle | phf-filter | phf-cond | phf-ul | phf-rwr | phf-awr
                      PHF objectives on a scored corpus (phf.corpus=FILE.jsonl with a text
                      field; default: the task's corpus)

  dm.target=constraint | reward | moments      π0·b, π0·exp(r/β), π0·exp(λ·b) with λ fitted

  objective=package.module:Class   your own Objective subclass (docs/plugins.md)

  Each objective's own settings sit under its section: ppo.*, reinforce.*, wmle.*, dm.*
  (dpg, fdpg, cdpg), phf.* (phf-*); rloo has none.

  scorer=pep8 | package.module:attribute | file.py:function | DIR   the preference source
                             ("" = the task's): a TRL reward function, a scorer, or a
                             sequence / token reward-model folder
  reward.source=scorer       the scorer's sequence score (pep8: -violations/char)
  reward.source=blame        the same score spread over the tokens the scorer blames (or a
                             reward function's own per-token rewards)
  reward.source=token_model  a model from `tokenalign reward` (reward.token_model=DIR)
  reward.source=package.module:attribute   your own reward-source builder
  reward.placement=token | segment | sequence   dense, per line/sentence, or last token only

Fine-grained PPO is objective=ppo with reward.placement=token; sequence-level PPO is the
same with reward.placement=sequence. The run folder (out_dir) gets config.yaml,
metrics.jsonl, checkpoint/ (resumed from automatically), model/, summary.json and
report.html. Distributed: `accelerate launch -m tokenalign train ...`.

examples:
  tokenalign train -c examples/train-ppo-sequence.yaml
  tokenalign train -c examples/byo-train.yaml       # your model, chat prompts, reward function
  tokenalign train --set objective=rloo --set iterations=20 --set out_dir=runs/rloo
  tokenalign train --set objective=ppo --set reward.source=token_model \\
      --set reward.token_model=runs/rm-edits/model --set reward.placement=token
  tokenalign train --set objective=cdpg --set out_dir=runs/cdpg     # "no PEP8 violation"
  tokenalign train --set objective=phf-cond --set iterations=150 --set out_dir=runs/phf-cond
  tokenalign config train        # every key with its default
"""


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "train", help="train a policy (ppo | reinforce | rloo | wmle | dpg | fdpg | cdpg | phf-*)", description=DESCRIPTION, formatter_class=HELP_FORMATTER
    )
    add_config_arguments(parser, resumable=True)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from tokenalign.config import load_config
    from tokenalign.jobs.train import TrainConfig, run_train

    cfg = load_config(TrainConfig, args.config, args.overrides)
    print_before_after(run_train(cfg, allow_config_change=args.allow_config_change), cfg.out_dir)
    return 0


def print_before_after(summary: dict[str, Any], out_dir: str) -> None:
    """The held-out table of a finished run (nothing when the run stopped early); printed
    by the main process of a launched run only."""
    from rich.console import Console
    from rich.table import Table

    from tokenalign.utils.runfolder import is_main_rank

    if not is_main_rank():
        return

    if not summary.get("finished"):
        Console().print(f"stopped at iteration {summary.get('iteration')}; rerun the same command to resume")
        return
    if "stopped_early" in summary:
        Console().print(f"stopped early at iteration {summary['stopped_early']['iteration']}: {summary['stopped_early']['reason']}")
    if "after" not in summary:
        Console().print(f"finished {summary.get('iteration')} iterations (no held-out evaluation: eval.every=0); model in {out_dir}/model")
        return
    table = Table(title=f"held-out evaluation: {out_dir}")
    table.add_column("measure")
    table.add_column("before", justify="right")
    table.add_column("after", justify="right")
    for k, v in summary["after"].items():
        b = summary["before"].get(k)
        table.add_row(k, f"{b:.4f}" if isinstance(b, float) else str(b), f"{v:.4f}" if isinstance(v, float) else str(v))
    Console().print(table)
