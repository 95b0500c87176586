"""``tokenalign data check``: validate a data file and describe it."""

from __future__ import annotations

import dataclasses
import statistics
from collections.abc import Mapping
from typing import Any

from tokenalign.data.loading import LoadResult, load_records

__all__ = ["CheckReport", "check_file"]


@dataclasses.dataclass
class CheckReport:
    """Counts, per-field length statistics and every problem of one file."""

    result: LoadResult
    char_stats: dict[str, dict[str, float]]
    token_stats: dict[str, dict[str, float]]
    n_over_length: int | None
    k_counts: dict[int, int]
    n_lists_with_ties: int

    @property
    def clean(self) -> bool:
        return not self.result.problems


def _stats(values: list[int]) -> dict[str, float]:
    if not values:
        return {}
    return {"min": min(values), "mean": statistics.fmean(values), "median": statistics.median(values), "max": max(values)}


def _texts(record: Any) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for field in type(record).FIELDS:
        value = getattr(record, field)
        if isinstance(value, str):
            out[field] = [value]
        elif field == "responses":
            out[field] = list(value)
    return out


def check_file(
    source: str,
    fmt: str,
    *,
    field_map: Mapping[str, str] | None = None,
    split: str = "train",
    file_format: str | None = None,
    tokenizer: Any = None,
    max_length: int | None = None,
) -> CheckReport:
    """Load every record (collecting all problems) and compute statistics."""
    result = load_records(source, fmt, skip_invalid=True, field_map=field_map, split=split, file_format=file_format,
                          log_summary=False)
    chars: dict[str, list[int]] = {}
    tokens: dict[str, list[int]] = {}
    k_counts: dict[int, int] = {}
    ties = 0
    n_over = 0 if (tokenizer is not None and max_length) else None
    for record in result.records:
        lengths_tok: dict[str, list[int]] = {}
        for field, texts in _texts(record).items():
            chars.setdefault(field, []).extend(len(t) for t in texts)
            if tokenizer is not None:
                lens = [len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]]
                tokens.setdefault(field, []).extend(lens)
                lengths_tok[field] = lens
        if fmt == "ranked":
            k_counts[len(record.responses)] = k_counts.get(len(record.responses), 0) + 1
            ties += len(set(record.scores)) < len(record.scores)
        if n_over is not None:
            prompt = lengths_tok.get("prompt", [0])[0]
            longest = max((max(v) for f, v in lengths_tok.items() if f != "prompt"), default=0)
            n_over += prompt + longest > max_length
    return CheckReport(
        result,
        {f: _stats(v) for f, v in chars.items()},
        {f: _stats(v) for f, v in tokens.items()},
        n_over,
        dict(sorted(k_counts.items())),
        ties,
    )
