"""``tokenalign eval``: judge a model on a task with the gold scorer and what could fake it."""

from __future__ import annotations

import argparse
from typing import Any

from tokenalign.commands import HELP_FORMATTER, add_config_arguments

DESCRIPTION = """\
Evaluate a causal or encoder-decoder LM (a folder written by tokenalign, any
from_pretrained folder, or a hub id) on a task: samples_per_prompt samples of each held-out
prompt at T 0.7 / top-p 0.9,
judged by --scorer (default: the task's gold scorer; pep8: pycodestyle violations per
character, syntax failures at the failure score; any registered scorer,
package.module:function such as a TRL reward function, or a reward-model folder). The
metrics are named after it: mean misalignment (pep8 adds the syntax-failure rate and the
violation-free share) or mean reward, the failure rate, the expected worst over k samples,
the share above a threshold (misalignment only), win rate against a reference model (default: the task's base model; same
prompts and seeds; ties count half), KL(pi || pi_ref) from samples at T 1, mean length,
distinct-n and self-BLEU, and, with --reward-model, the localization AUC of a token
reward model against the gold blame.

Writes metrics.json, samples.jsonl and report.html into --out and prints a table.

examples:
  tokenalign eval                                   # the shipped base model
  tokenalign eval --model runs/rloo/model --out runs/eval-rloo
  tokenalign eval --model runs/rloo/model --set prompts_split=other-style   # pep8 headers in other styles
  tokenalign eval --model runs/ppo/model --prompts my_prompts.jsonl --set samples_per_prompt=4
  tokenalign eval --model runs/ppo/model --reward-model runs/rm-edits/model --set compare='[runs/eval-rloo]'
  tokenalign eval --task text --model my_lm --prompts prompts.jsonl --scorer my_rewards:helpfulness
  tokenalign eval --task text --model my_lm --prompts prompts.jsonl --scorer runs/seq-rm   # a reward model
"""


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("eval", help="evaluate a model on a task", description=DESCRIPTION,
                                   formatter_class=HELP_FORMATTER)
    add_config_arguments(parser)
    parser.add_argument("--model", help="model folder or hub id (default: the task's base model)")
    parser.add_argument("--task", help="task name (default: pep8)")
    parser.add_argument("--prompts", metavar="FILE", help="prompts file or dataset with a `prompt` field, text or chat "
                        "messages (default: the task's prompts of split prompts_split, test)")
    parser.add_argument("--scorer", metavar="NAME", help="what judges the samples: a registered scorer, package.module:function "
                        "or a reward-model folder (default: the task's scorer)")
    parser.add_argument("--reward-model", metavar="DIR", help="token reward model: adds localization AUC")
    parser.add_argument("--out", metavar="DIR", help="output folder (default: runs/eval)")
    parser.add_argument("--quick", action="store_true", help="8 prompts x 4 samples of at most 48 tokens (a smoke test)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from tokenalign.config import load_config
    from tokenalign.jobs.eval import EvalConfig, run_eval

    # --quick first, so that explicit --set values win over it
    overrides = ["n_prompts=8", "samples_per_prompt=4", "sampling.max_new_tokens=48"] if args.quick else []
    overrides += list(args.overrides)
    for flag, key in (("model", "model"), ("task", "task"), ("prompts", "prompts"), ("scorer", "scorer"), ("reward_model", "reward_model"), ("out", "out_dir")):
        value = getattr(args, flag)
        if value:
            overrides.append(f"{key}={value}")
    cfg = load_config(EvalConfig, args.config, overrides)
    metrics = run_eval(cfg)
    from tokenalign.utils.runfolder import is_main_rank

    if not is_main_rank():  # the main process of a launched run prints
        return 0
    table = Table(title=f"tokenalign eval: {metrics['model']}")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for k, v in metrics.items():
        if k.startswith("n_") or k in ("model", "reference", "scorer", "metric"):
            continue
        table.add_row(k, f"{v:.4f}" if isinstance(v, float) else str(v))
    Console().print(table)
    Console().print(f"report: {cfg.out_dir}/report.html")
    return 0
