"""``tokenalign show``: a token reward model's rewards on a data file, as an HTML heatmap."""

from __future__ import annotations

import dataclasses
from typing import Any

__all__ = ["responses_of", "run_show"]


def responses_of(record: Any, fmt: str) -> list[tuple[str, str, str]]:
    """(prompt, response, title) of each response to show for a record (a chat prompt as
    its messages' text, one per line)."""
    if not isinstance(record.prompt, str):
        record = dataclasses.replace(record, prompt="\n".join(f"{m.role}: {m.content}" for m in record.prompt))
    if fmt == "pairs":
        return [(record.prompt, record.chosen, "chosen"), (record.prompt, record.rejected, "rejected")]
    if fmt == "ranked":
        return [(record.prompt, r, f"response {i} (score {s:g})") for i, (r, s) in enumerate(zip(record.responses, record.scores))]
    if fmt == "edits":
        return [(record.prompt, record.original, "original"), (record.prompt, record.edited, "edited")]
    return [(record.prompt, record.completion, "completion")]


def run_show(reward_model: str, data: str, fmt: str, output: str, limit: int = 20, max_length: int | None = None) -> int:
    """Score the responses of the first ``limit`` records with the reward model and write
    the heatmap to ``output``; returns how many responses it shows."""
    from tokenalign.data import load_records
    from tokenalign.report import HeatmapExample, write_heatmap
    from tokenalign.rewards.model import TokenRewardModel
    from tokenalign.rewards.scoring import score_tokens
    from tokenalign.utils.models import load_tokenizer

    model = TokenRewardModel.from_pretrained(reward_model)
    tokenizer = load_tokenizer(reward_model)
    records = load_records(data, fmt).records[:limit]
    items = [x for r in records for x in responses_of(r, fmt)]
    scored = score_tokens(model, tokenizer, [p for p, _, _ in items], [r for _, r, _ in items], max_length=max_length)
    examples = [
        HeatmapExample(s.response, s.spans, s.rewards, title=title, prompt=prompt[-300:],
                       meta={"tokens": len(s.rewards), "mean reward": sum(s.rewards) / max(len(s.rewards), 1)})
        for (prompt, _, title), s in zip(items, scored)
    ]
    center = 0.0 if model.head_config.bounding in ("identity", "centered_sigmoid") else 0.549
    write_heatmap(output, examples, title=f"Token rewards: {reward_model}", center=center, label="token reward")
    return len(examples)
