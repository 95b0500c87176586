"""What ``tokenalign data check`` reports: counts, length statistics and every problem.

Lengths are per field, in characters (and in tokens when a tokenizer is given). For
``ranked`` the K distribution and the number of lists with tied scores are added. With a
tokenizer and ``max_length``, an example counts as over-long when its prompt plus its
longest response (tokens, without special tokens) exceed ``max_length``: training would
truncate it (see :mod:`tokenalign.data.truncation`), never drop it.
"""

from __future__ import annotations

import collections
import dataclasses
import statistics
from collections.abc import Mapping, Sequence
from typing import Any

from tokenalign.data.loading import LoadResult, load_records
from tokenalign.data.records import Message, Messages, Record

__all__ = ["CheckReport", "check_file", "length_stats"]

_TOKENIZE_CHUNK = 1024  # texts per tokenizer call: batched, with bounded memory


@dataclasses.dataclass
class CheckReport:
    """Counts, per-field length statistics and every problem of one source."""

    result: LoadResult
    char_stats: dict[str, dict[str, float]]
    token_stats: dict[str, dict[str, float]]
    n_over_length: int | None  # None unless a tokenizer and max_length were given
    k_counts: dict[int, int]  # ranked: list size K -> number of lists
    n_lists_with_ties: int  # ranked: lists where at least two scores are equal

    @property
    def clean(self) -> bool:
        """No invalid record (warnings do not count)."""
        return not self.result.problems


def length_stats(values: Sequence[int]) -> dict[str, float]:
    """``min``, ``mean``, ``median`` and ``max`` of some lengths (empty: ``{}``)."""
    if not values:
        return {}
    return {
        "min": min(values),
        "mean": statistics.fmean(values),
        "median": statistics.median(values),
        "max": max(values),
    }


def _is_messages(value: Any) -> bool:
    return isinstance(value, tuple) and bool(value) and isinstance(value[0], Message)


def _message_text(messages: Messages) -> str:
    """A chat prompt's text for length statistics: its messages' contents, one per line."""
    return "\n".join(m.content for m in messages)


def _field_texts(records: Sequence[Record]) -> dict[str, list[list[str]]]:
    """For each text field, the texts of each record (one, or K for ``responses``)."""
    if not records:
        return {}
    fields = [f for f in type(records[0]).FIELDS if f != "scores"]
    return {
        f: [[v] if isinstance(v, str) else [_message_text(v)] if _is_messages(v) else list(v)
            for v in (getattr(r, f) for r in records)]
        for f in fields
    }


def _token_lengths(tokenizer: Any, texts: list[str]) -> list[int]:
    lengths: list[int] = []
    for start in range(0, len(texts), _TOKENIZE_CHUNK):
        ids = tokenizer(texts[start:start + _TOKENIZE_CHUNK], add_special_tokens=False)["input_ids"]
        lengths.extend(len(x) for x in ids)
    return lengths


def _regroup(flat: list[int], groups: list[list[str]]) -> list[list[int]]:
    out, i = [], 0
    for group in groups:
        out.append(flat[i:i + len(group)])
        i += len(group)
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
    """Load every record of ``source`` (collecting all problems) and describe them.

    Raises :class:`~tokenalign.errors.DataError` only when the source as a whole cannot
    be read (missing file, unknown file type, no records).
    """
    result = load_records(source, fmt, skip_invalid=True, field_map=field_map, split=split,
                          file_format=file_format, log_summary=False)
    texts = _field_texts(result.records)
    char_stats = {f: length_stats([len(t) for group in groups for t in group]) for f, groups in texts.items()}
    token_stats: dict[str, dict[str, float]] = {}
    n_over = None
    if tokenizer is not None:
        tokens = {f: _regroup(_token_lengths(tokenizer, [t for g in groups for t in g]), groups)
                  for f, groups in texts.items()}
        token_stats = {f: length_stats([n for g in groups for n in g]) for f, groups in tokens.items()}
        if max_length is not None:
            prompt = tokens.get("prompt", [[0]] * len(result.records))
            responses = [f for f in tokens if f != "prompt"]
            longest = [max((max(tokens[f][i]) for f in responses), default=0) for i in range(len(result.records))]
            n_over = sum(p[0] + r > max_length for p, r in zip(prompt, longest))
    k_counts: collections.Counter[int] = collections.Counter()
    ties = 0
    if fmt == "ranked":
        k_counts.update(len(r.responses) for r in result.records)
        ties = sum(len(set(r.scores)) < len(r.scores) for r in result.records)
    return CheckReport(result, char_stats, token_stats, n_over, dict(sorted(k_counts.items())), ties)
