"""Truncating over-long (prompt, response) token sequences: counted, never dropped.

Policy, when ``len(prompt) + len(response) > max_length``:

1. drop the prompt's oldest tokens (from its left: the end of a prompt, next to the
   response, matters most), but keep at least ``min_prompt_tokens`` of them;
2. then cut the response's end.

At least one response token is always kept when the response has any, so that every
example still has something to score. A :class:`TruncationCounter` counts the examples
that were cut and logs one summary, e.g. ``12 of 300 examples truncated to 512 tokens``.
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
    """Fit ``prompt + response`` into ``max_length`` tokens (``None``: no limit).

    Returns ``(prompt_ids, response_ids, truncated)`` as new lists; the inputs are not
    changed. Example: prompt ``[1, 2, 3, 4]``, response ``[5, 6]``, ``max_length=4`` gives
    ``([3, 4], [5, 6], True)``.
    """
    prompt, response = list(prompt_ids), list(response_ids)
    if max_length is None or len(prompt) + len(response) <= max_length:
        return prompt, response, False
    if max_length < 1:
        raise ValueError(f"max_length must be >= 1, got {max_length}")
    if min_prompt_tokens < 0:
        raise ValueError(f"min_prompt_tokens must be >= 0, got {min_prompt_tokens}")
    room_for_prompt = max_length - 1 if response else max_length  # keep >= 1 response token
    keep_prompt = max(min(len(prompt), min_prompt_tokens), max_length - len(response))
    keep_prompt = min(keep_prompt, len(prompt), room_for_prompt)
    prompt = prompt[len(prompt) - keep_prompt:]
    response = response[: max_length - keep_prompt]
    return prompt, response, True


@dataclasses.dataclass
class TruncationCounter:
    """Truncates examples with :func:`truncate_pair`, counts the cut ones, logs one summary."""

    max_length: int | None
    min_prompt_tokens: int = 0
    seen: int = 0
    truncated: int = 0

    def add(self, was_truncated: bool) -> None:
        """Count one example (for callers that truncate themselves)."""
        self.seen += 1
        self.truncated += bool(was_truncated)

    def truncate(self, prompt_ids: Sequence[int], response_ids: Sequence[int]) -> tuple[list[int], list[int]]:
        """Truncate one example to ``max_length`` and count it."""
        prompt, response, cut = truncate_pair(prompt_ids, response_ids, self.max_length, self.min_prompt_tokens)
        self.add(cut)
        return prompt, response

    def summary(self, what: str = "examples") -> str:
        """``"12 of 300 examples truncated to 512 tokens"``."""
        return f"{self.truncated} of {self.seen} {what} truncated to {self.max_length} tokens"

    def log_summary(self, what: str = "examples") -> None:
        """Log the summary as one warning, only when something was truncated."""
        if self.truncated:
            log.warning("%s", self.summary(what))
