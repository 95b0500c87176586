"""Truncating over-long (prompt, response) token sequences — counted, never dropped.

Policy: first drop the prompt's oldest tokens (keeping at least ``min_prompt_tokens``),
then cut the response's end. A :class:`TruncationCounter` collects how many examples were
cut so that one summary warning can be logged.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence

log = logging.getLogger(__name__)

__all__ = ["truncate_pair", "TruncationCounter"]


def truncate_pair(
    prompt_ids: Sequence[int],
    response_ids: Sequence[int],
    max_length: int | None,
    min_prompt_tokens: int = 0,
) -> tuple[list[int], list[int], bool]:
    """Fit ``prompt + response`` into ``max_length`` tokens; returns (prompt, response, cut)."""
    prompt, response = list(prompt_ids), list(response_ids)
    if max_length is None or len(prompt) + len(response) <= max_length:
        return prompt, response, False
    if max_length < 1:
        raise ValueError("max_length must be >= 1")
    keep_prompt = max(min(len(prompt), min_prompt_tokens), max_length - len(response))
    keep_prompt = min(keep_prompt, len(prompt), max_length - 1 if response else max_length)
    prompt = prompt[len(prompt) - keep_prompt :] if keep_prompt > 0 else []
    response = response[: max_length - len(prompt)]
    return prompt, response, True


@dataclasses.dataclass
class TruncationCounter:
    """Counts truncated examples and logs one summary."""

    max_length: int | None
    seen: int = 0
    truncated: int = 0

    def add(self, was_truncated: bool) -> None:
        self.seen += 1
        self.truncated += bool(was_truncated)

    def log_summary(self, what: str = "examples") -> None:
        if self.truncated:
            log.warning("%d of %d %s truncated to %s tokens", self.truncated, self.seen, what, self.max_length)
