"""``tokenalign data``: validate and describe data files (``tokenalign data check``)."""

from __future__ import annotations

import argparse
from typing import Any

from tokenalign.commands import HELP_FORMATTER

FORMATS = ("pairs", "ranked", "edits", "prompts", "supervised", "text")

EPILOG = """\
formats (one record per row; field names follow TRL):
  pairs       prompt, chosen (the preferred response), rejected
              Or whole dialogues with only chosen/rejected that share a prefix
              (HH-RLHF): the shared prefix up to its last "\\n\\nAssistant:" becomes
              the prompt, the differing tails the responses.
  ranked      prompt, responses (list of K >= 2 strings),
              scores (list of K finite numbers; higher is better; ties allowed)
  edits       prompt, original (the worse response), edited (its minimal edit)
  prompts     prompt
  supervised  prompt, completion
  text        text (a document, scored per segment)
Responses must be non-empty (whitespace, zero-width, BOM and NUL characters only count
as empty); a prompt may be "". No string may hold a lone surrogate ("\\ud800"); in ranked,
one response under two different scores is an error.
Extra fields are ignored. --field-map prompt=question reads 'prompt' from the column
'question'.

sources (chosen by extension; --file-format overrides):
  .jsonl   one JSON object per line (blank lines are skipped)
  .json    a list of objects, or {"data": [...]}
  .csv     a header row; list fields (responses, scores) as JSON in a cell: ["a","b"]
  .parquet
  (each may end in .gz: prefs.jsonl.gz is decompressed on the fly)
  a folder written by datasets' save_to_disk (--split picks from a DatasetDict), or
  a Hugging Face hub dataset name (needs network)

output: records read / valid / invalid / with warnings, length statistics per field
(characters; tokens with --tokenizer), K and ties for ranked, then every problem as
  FILE:LINE: field 'NAME': what is wrong
(JSON: FILE: item I; Parquet and datasets: FILE: row I; both 0-based).
Warnings (records that are valid and kept, but e.g. edited == original: no signal)
do not fail the check.

exit status: 0 clean, 1 problems found, 2 the source could not be read at all.

examples:
  tokenalign data check prefs.jsonl --format pairs
  tokenalign data check lists.parquet --format ranked --tokenizer ./my-model --max-length 512
  tokenalign data check qa.csv --format supervised --field-map prompt=question --field-map completion=answer
"""


def register(subparsers: Any) -> None:
    """Add ``data`` and its subcommand ``check``."""
    parser = subparsers.add_parser("data", help="validate and describe data files",
                                   description="Validate and describe data files.")
    sub = parser.add_subparsers(dest="data_command", metavar="SUBCOMMAND", title="subcommands")
    check = sub.add_parser(
        "check",
        help="validate a data file: counts, lengths, every problem",
        description="Validate a data file: print counts, length statistics and every problem found.",
        epilog=EPILOG,
        formatter_class=HELP_FORMATTER,
    )
    check.add_argument("file", help="data file, saved dataset folder, or hub dataset name")
    check.add_argument("--format", required=True, choices=FORMATS, help="the data format (see below)")
    check.add_argument("--file-format", choices=["jsonl", "json", "csv", "parquet", "dataset", "hub"],
                       help="the kind of source, when the extension does not tell")
    check.add_argument("--field-map", action="append", default=[], metavar="FIELD=COLUMN",
                       help="read FIELD from the source's COLUMN (repeatable)")
    check.add_argument("--split", default="train", help="split of a dataset (default: train)")
    check.add_argument("--tokenizer", metavar="DIR", help="a local tokenizer folder: adds token-length statistics")
    check.add_argument("--max-length", type=int, metavar="N",
                       help="with --tokenizer: count examples longer than N tokens (they would be truncated)")
    check.add_argument("--max-problems", type=int, default=50, metavar="N",
                       help="print at most N problems and N warnings (default 50)")
    check.set_defaults(func=run_check)
    parser.set_defaults(func=_print_help(parser))


def _print_help(parser: argparse.ArgumentParser) -> Any:
    def run(args: argparse.Namespace) -> int:
        parser.print_help()
        return 2

    return run


def parse_field_map(items: list[str]) -> dict[str, str]:
    """``["prompt=question"]`` -> ``{"prompt": "question"}``."""
    from tokenalign.errors import TokenalignError

    field_map = {}
    for item in items:
        field, sep, column = item.partition("=")
        if not sep or not field.strip() or not column.strip():
            raise TokenalignError(f"--field-map '{item}' must look like FIELD=COLUMN")
        field_map[field.strip()] = column.strip()
    return field_map


def _load_tokenizer(path: str) -> Any:
    from pathlib import Path

    from tokenalign.errors import TokenalignError

    if not Path(path).is_dir():
        raise TokenalignError(f"--tokenizer '{path}' is not a folder (a local tokenizer folder is needed)")
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(path, local_files_only=True)
    except (OSError, ValueError) as err:
        raise TokenalignError(f"cannot load a tokenizer from '{path}': {err}") from None


def run_check(args: argparse.Namespace) -> int:
    """Validate one source; 0 when it is clean, 1 when it has problems."""
    from rich.console import Console
    from rich.table import Table

    from tokenalign.data.check import check_file
    from tokenalign.errors import TokenalignError

    if args.max_length is not None and not args.tokenizer:
        raise TokenalignError("--max-length needs --tokenizer (lengths are counted in tokens)")
    if args.max_length is not None and args.max_length < 1:
        raise TokenalignError(f"--max-length must be >= 1, got {args.max_length}")
    field_map = parse_field_map(args.field_map)
    tokenizer = _load_tokenizer(args.tokenizer) if args.tokenizer else None
    report = check_file(args.file, args.format, field_map=field_map, split=args.split,
                        file_format=args.file_format, tokenizer=tokenizer, max_length=args.max_length)
    res = report.result
    console = Console(highlight=False)

    console.print(f"{args.file} ({args.format})", markup=False, soft_wrap=True)
    summary = Table(show_header=False)
    summary.add_column("what")
    summary.add_column("count", justify="right")
    summary.add_row("records read", str(res.n_read))
    summary.add_row("valid", str(res.n_valid))
    summary.add_row("invalid", str(res.n_invalid))
    summary.add_row("warnings", str(len(res.warnings)))
    if args.format == "ranked":
        summary.add_row("K (list sizes)", ", ".join(f"K={k}: {n}" for k, n in report.k_counts.items()) or "-")
        summary.add_row("lists with tied scores", str(report.n_lists_with_ties))
    if report.n_over_length is not None:
        summary.add_row(f"longer than {args.max_length} tokens (would be truncated)", str(report.n_over_length))
    console.print(summary)

    for unit, stats in (("characters", report.char_stats), ("tokens", report.token_stats)):
        if not stats:
            continue
        table = Table(title=f"lengths in {unit}")
        table.add_column("field")
        for col in ("min", "mean", "median", "max"):
            table.add_column(col, justify="right")
        for field, s in stats.items():
            table.add_row(field, f"{s['min']:g}", f"{s['mean']:.1f}", f"{s['median']:g}", f"{s['max']:g}")
        console.print(table)

    for title, items in (("problems", res.problems), ("warnings (valid records, kept)", res.warnings)):
        if not items:
            continue
        console.print(f"{title}:")
        for err in items[: max(args.max_problems, 0)]:
            console.print(str(err), markup=False, soft_wrap=True)
        if len(items) > args.max_problems:
            console.print(f"... and {len(items) - max(args.max_problems, 0)} more {title.split()[0]}")
    if report.clean:
        console.print(f"clean: {res.n_valid} valid records")
        return 0
    console.print(f"{res.n_invalid} invalid of {res.n_read} records")
    return 1
