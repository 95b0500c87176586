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


def responses_of(record: Any, fmt: str) -> list[tuple[str, str, str]]:
    """(prompt, response, title) of each response to show for a record."""
    if fmt == "pairs":
        return [(record.prompt, record.chosen, "chosen"), (record.prompt, record.rejected, "rejected")]
    if fmt == "ranked":
        return [(record.prompt, r, f"response {i} (score {s:g})") for i, (r, s) in enumerate(zip(record.responses, record.scores))]
    if fmt == "edits":
        return [(record.prompt, record.original, "original"), (record.prompt, record.edited, "edited")]
    return [(record.prompt, record.completion, "completion")]


def run(args: argparse.Namespace) -> int:
    from transformers import AutoTokenizer

    from tokenalign.data import load_records
    from tokenalign.report import HeatmapExample, write_heatmap
    from tokenalign.rewards.model import TokenRewardModel
    from tokenalign.rewards.scoring import score_tokens

    model = TokenRewardModel.from_pretrained(args.reward_model)
    tokenizer = AutoTokenizer.from_pretrained(args.reward_model)
    records = load_records(args.data, args.format).records[: args.limit]
    items = [x for r in records for x in responses_of(r, args.format)]
    scored = score_tokens(model, tokenizer, [p for p, _, _ in items], [r for _, r, _ in items], max_length=args.max_length)
    examples = [
        HeatmapExample(s.response, s.spans, s.rewards, title=title, prompt=prompt[-300:],
                       meta={"tokens": len(s.rewards), "mean reward": sum(s.rewards) / max(len(s.rewards), 1)})
        for (prompt, _, title), s in zip(items, scored)
    ]
    center = 0.0 if model.head_config.bounding in ("identity", "centered_sigmoid") else 0.549
    write_heatmap(args.output, examples, title=f"Token rewards: {args.reward_model}", center=center, label="token reward")
    print(f"wrote {args.output} ({len(examples)} responses)")
    return 0
