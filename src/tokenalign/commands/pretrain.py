"""``tokenalign pretrain``: reproduce the pep8 task's shipped base model."""

from __future__ import annotations

import argparse
from typing import Any

from tokenalign.commands import HELP_FORMATTER, add_config_arguments

DESCRIPTION = """\
Train the pep8 task's base LM from scratch on the standard library of the running
interpreter: a byte-level BPE tokenizer on the train split, then a small GPT-2 (defaults:
4 layers, 256 wide, context 256, ~4.3M parameters) with AdamW, warmup + cosine decay and
bf16 autocast where the CPU/GPU has it. A killed run resumes from out_dir/checkpoint.
method_documents=true adds every method, dedented to column 0, as an extra document (the
shape of the task's prompts); init_from=DIR continues from a model folder (its weights and
tokenizer). The result (out_dir/model) is what ships in tokenalign/tasks/pep8/assets/model.

examples:
  tokenalign pretrain                               # the shipped model's recipe
  # continue from a model, adding dedented methods as documents:
  tokenalign pretrain --set out_dir=runs/pt-methods --set init_from=runs/pt/model \\
      --set method_documents=true --set steps=1000 --set lr=8e-4
  tokenalign pretrain --set steps=200 --set out_dir=runs/pt-small
  tokenalign config pretrain        # every key with its default
"""


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "pretrain", help="pretrain the pep8 task's base LM", description=DESCRIPTION, formatter_class=HELP_FORMATTER
    )
    add_config_arguments(parser, resumable=True)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from tokenalign.config import load_config
    from tokenalign.tasks.pep8.pretrain import PretrainConfig, pretrain

    cfg = load_config(PretrainConfig, args.config, args.overrides)
    path = pretrain(cfg, allow_config_change=args.allow_config_change)
    print(f"model written to {path}")
    return 0
