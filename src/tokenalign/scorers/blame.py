"""Gold blame: pycodestyle reports as character spans, and spans as per-token labels.

Span rules, per violation at (line, column) of the checked source:
- E501 line too long: from column ``max_line_length`` to the end of the line;
- W291 / W293 trailing whitespace: the whitespace run to the end of the line;
- W391 blank line at end of file: from that line to the end of the text;
- W292 no newline at end of file: the last character;
- everything else: the lexical unit at the column — a word, a run of punctuation, or a run
  of whitespace (e.g. E203 whitespace before ':'); at the end of a line, the character before.
Spans are never empty.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np

from tokenalign.scorers.base import Blame

__all__ = ["violation_span", "blame_to_tokens"]

_UNIT = re.compile(r"\w+|[^\w\s]+|[ \t]+")


def violation_span(source: str, line_starts: Sequence[int], line: int, col: int, code: str, max_line_length: int = 79) -> tuple[int, int]:
    """Character span ``[start, end)`` in ``source`` of one violation (see module rules)."""
    line = min(max(line, 1), len(line_starts))
    start_of_line = line_starts[line - 1]
    end_of_line = source.find("\n", start_of_line)
    end_of_line = len(source) if end_of_line < 0 else end_of_line
    pos = min(start_of_line + max(col, 0), len(source))
    if code == "E501":
        return min(start_of_line + max_line_length, end_of_line - 1), end_of_line
    if code in ("W291", "W293"):
        return pos, max(end_of_line, pos + 1)
    if code == "W391":
        return start_of_line, max(len(source), start_of_line + 1)
    if code == "W292":
        return max(len(source) - 1, 0), max(len(source), 1)
    match = _UNIT.match(source, pos, end_of_line) if pos < end_of_line else None
    if match:
        return match.start(), match.end()
    start = max(min(pos, len(source)) - 1, 0)  # at the end of a line: the character before
    return start, start + 1


def blame_to_tokens(blames: Sequence[Blame], offsets: Sequence[tuple[int, int]], text_length: int | None = None) -> tuple[list[float], list[str]]:
    """Per token: 1.0 if its span overlaps a blamed span, else 0.0; and the codes it carries.

    Vectorised: a per-character mask (and code index) is built once, then each token's
    span is reduced with a cumulative sum.
    """
    n = text_length if text_length is not None else max([e for _, e in offsets] + [b.end for b in blames] + [0])
    mask = np.zeros(n + 1, dtype=np.int64)
    for b in blames:
        mask[max(0, b.start) : min(n, b.end)] = 1
    csum = np.concatenate([[0], np.cumsum(mask)])
    spans = np.asarray(offsets, dtype=np.int64).reshape(-1, 2)
    starts, ends = np.clip(spans[:, 0], 0, n), np.clip(spans[:, 1], 0, n)
    hit = (csum[ends] - csum[starts]) > 0
    codes = []
    for (s, e), h in zip(spans.tolist(), hit.tolist()):
        codes.append(",".join(sorted({b.code for b in blames if b.start < e and s < b.end})) if h else "")
    return hit.astype(float).tolist(), codes
