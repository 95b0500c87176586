"""``tokenalign data``: inspect and validate preference data files."""

from __future__ import annotations

import argparse
from typing import Any

from tokenalign.commands import HELP_FORMATTER

EPILOG = """\
formats (field names follow TRL):
  pairs       prompt, chosen, rejected   (or whole dialogues with only chosen/rejected
              sharing a prefix, HH-RLHF style: the prefix up to the last
              "\\n\\nAssistant:" becomes the prompt)
  ranked      prompt, responses (list, K >= 2), scores (numbers, higher is better, ties ok)
  edits       prompt, original (the worse response), edited (its minimal edit)
  prompts     prompt
  supervised  prompt, completion
  text        text

sources: .jsonl, .json (a list, or {"data": [...]}), .csv (list fields as JSON in a cell),
.parquet, a folder written by datasets' save_to_disk, or a Hugging Face dataset name.
Responses must be non-empty; prompts may be "". Every problem is reported as
FILE:LINE: field 'NAME': what is wrong.  Exit status: 0 clean, 1 problems found,
2 the file could not be read at all.

examples:
  tokenalign data check prefs.jsonl --format pairs
  tokenalign data check lists.parquet --format ranked --tokenizer ./my-model --max-length 512
  tokenalign data check qa.csv --format supervised --field-map prompt=question --field-map completion=answer
"""


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("data", help="validate and describe data files", description="Validate and describe data files.")
    sub = parser.add_subparsers(dest="data_command", metavar="SUBCOMMAND", title="subcommands")
    check = sub.add_parser(
        "check",
        help="validate a data file: counts, lengths, every problem",
        description="Validate a data file and print counts, length statistics and every problem found.",
        epilog=EPILOG,
        formatter_class=HELP_FORMATTER,
    )
    check.add_argument("file", help="data file, saved dataset folder, or dataset name")
    check.add_argument("--format", required=True, choices=["pairs", "ranked", "edits", "prompts", "supervised", "text"])
    check.add_argument("--file-format", choices=["jsonl", "json", "csv", "parquet", "dataset"], help="override the file type guessed from the extension")
    check.add_argument("--field-map", action="append", default=[], metavar="OURS=THEIRS", help="read field OURS from column THEIRS (repeatable)")
    check.add_argument("--split", default="train", help="split of a dataset (default: train)")
    check.add_argument("--tokenizer", help="a local tokenizer folder: adds token-length statistics")
    check.add_argument("--max-length", type=int, help="with --tokenizer: count examples longer than this (they would be truncated)")
    check.add_argument("--max-problems", type=int, default=50, help="problems to print (default 50)")
    check.set_defaults(func=run_check)
    parser.set_defaults(func=lambda args: (parser.print_help(), 2)[1])


def run_check(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from tokenalign.data.check import check_file
    from tokenalign.errors import TokenalignError

    field_map = {}
    for item in args.field_map:
        if "=" not in item:
            raise TokenalignError(f"--field-map '{item}' must look like OURS=THEIRS")
        ours, theirs = item.split("=", 1)
        field_map[ours] = theirs
    tokenizer = None
    if args.tokenizer:
        from transformers import AutoTokenizer

        try:
            tokenizer = AutoTokenizer.from_pretrained(args.tokenizer)
        except OSError as err:
            raise TokenalignError(f"cannot load tokenizer '{args.tokenizer}': {err}") from None
    report = check_file(args.file, args.format, field_map=field_map, split=args.split,
                        file_format=args.file_format, tokenizer=tokenizer, max_length=args.max_length)
    res = report.result
    console = Console(highlight=False)
    summary = Table(title=f"{args.file} ({args.format})", show_header=False, min_width=60)
    summary.add_row("records read", str(res.n_read))
    summary.add_row("valid", str(len(res.records)))
    summary.add_row("invalid", str(len(res.problems)))
    summary.add_row("warnings", str(len(res.warnings)))
    if args.format == "ranked":
        summary.add_row("K (list sizes)", ", ".join(f"K={k}: {n}" for k, n in report.k_counts.items()) or "-")
        summary.add_row("lists with tied scores", str(report.n_lists_with_ties))
    if report.n_over_length is not None:
        summary.add_row(f"longer than {args.max_length} tokens", f"{report.n_over_length} (would be truncated, never dropped)")
    console.print(summary)
    for unit, stats in (("characters", report.char_stats), ("tokens", report.token_stats)):
        if not stats:
            continue
        table = Table(title=f"lengths in {unit}")
        for col in ("field", "min", "mean", "median", "max"):
            table.add_column(col, justify="left" if col == "field" else "right")
        for field, s in stats.items():
            table.add_row(field, *(f"{s[k]:.1f}" if k == "mean" else f"{s[k]:g}" for k in ("min", "mean", "median", "max")))
        console.print(table)
    for kind, items in (("problem", res.problems), ("warning", res.warnings)):
        for err in items[: args.max_problems]:
            console.print(f"{kind}: {err}", markup=False, soft_wrap=True)
        if len(items) > args.max_problems:
            console.print(f"... and {len(items) - args.max_problems} more {kind}s")
    console.print("clean" if report.clean else f"{len(res.problems)} problem(s) found")
    return 0 if report.clean else 1
