"""Gold blame: pycodestyle reports as character spans, and spans as per-token labels.

pycodestyle reports a violation at a (line, column) of the checked text (prompt +
completion). :func:`violation_span` turns it into the character span ``[start, end)`` that
is to blame, by code family:

- E501 line too long (and W505): from the reported column (``max_line_length``) to the
  end of the line — the overflow;
- W291 / W293 trailing whitespace: the whitespace run to the end of the line;
- W391 blank line at end of file: all the trailing blank lines;
- W292 no newline at end of file: the last character;
- E303 too many blank lines / E304 blank line after decorator: the blank lines above the
  reported line (what autopep8 deletes);
- E1xx / W1xx indentation (E111 not a multiple of four, E12x continuation lines, W191
  tabs, ...): the line's leading whitespace when the column falls in or right after it;
  with no indentation at all (E112, E122) the first lexical unit;
- W605 invalid escape sequence: the backslash and the character after it;
- everything else (E2xx whitespace, E3xx expected blank lines, E7xx statements, ...): the
  lexical unit at the column — a word, a Python operator (``=``, ``==``, ``**=``, ``->``),
  a single other punctuation character (the ``,`` of E231), or a run of whitespace (E203,
  E221); at the end of a line, the character before.

:func:`completion_blame` keeps the spans that reach into the completion, clipped to it
(violations wholly inside the prompt are not the completion's fault), and
:func:`blame_to_tokens` turns spans into per-token labels. Spans are never empty.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

import numpy as np

from tokenalign.scorers.base import Blame

__all__ = ["line_starts", "violation_span", "completion_blame", "blame_to_tokens", "blame_heatmap_example"]

# Longest Python operators first, so that `**=` is one unit and `,(` is two.
_OPERATOR = r"\*\*=|//=|>>=|<<=|\.\.\.|->|:=|==|!=|<=|>=|\*\*|//|<<|>>|[-+*/%&|^@]="
_UNIT = re.compile(rf"\w+|{_OPERATOR}|[ \t\f]+|[^\w\s]")
_BLANK = re.compile(r"[ \t\f\r]*\n")


def line_starts(source: str) -> list[int]:
    """Character offset of the start of every line; lines end at ``\\n`` only, as for pycodestyle's input."""
    return [0] + [m.end() for m in re.finditer("\n", source)]


def _end_of_line(source: str, start: int) -> int:
    end = source.find("\n", start)
    return len(source) if end < 0 else end


def violation_span(source: str, starts: Sequence[int], line: int, col: int, code: str) -> tuple[int, int]:
    """Character span ``[start, end)`` in ``source`` of one violation at (1-based line, 0-based col)."""
    if not source:
        return 0, 0
    line = min(max(line, 1), len(starts))
    sol = starts[line - 1]
    eol = _end_of_line(source, sol)
    pos = min(sol + max(col, 0), len(source))
    family = code[:2]
    if code in ("E501", "W505"):
        return min(pos, max(eol - 1, sol)), max(eol, sol + 1)
    if code in ("W291", "W293"):
        return pos, max(eol, pos + 1)
    if code == "W391":
        first = line
        while first > 1 and _BLANK.fullmatch(source, starts[first - 2], starts[first - 1]):
            first -= 1
        return starts[first - 1], max(len(source), starts[first - 1] + 1)
    if code == "W292":
        return len(source) - 1, len(source)
    if code in ("E303", "E304"):
        first = line
        while first > 1 and _BLANK.fullmatch(source, starts[first - 2], starts[first - 1]):
            first -= 1
        if first < line:
            return starts[first - 1], sol
    if family in ("E1", "W1"):
        indent = len(source[sol:eol]) - len(source[sol:eol].lstrip(" \t\f"))
        if indent and col <= indent:
            return sol, sol + indent
    if code == "W605":
        return pos, max(min(pos + 2, eol), pos + 1)
    match = _UNIT.match(source, pos, eol) if pos < eol else None
    if match:
        return match.start(), match.end()
    start = max(pos - 1, 0)  # at the end of a line (or the text): the character before
    return start, start + 1


def completion_blame(
    source: str, violations: Iterable[tuple[int, int, str, str]], completion_start: int
) -> list[Blame]:
    """Spans of ``(line, col, code, message)`` violations of ``source`` that reach the completion.

    ``completion_start`` is where the completion begins in ``source`` (the prompt's length).
    A span ending at or before it is the prompt's and is dropped; the others are clipped
    to the completion and shifted to completion coordinates.
    """
    starts = line_starts(source)
    out = []
    for line, col, code, message in violations:
        start, end = violation_span(source, starts, line, col, code)
        if end <= completion_start:
            continue
        out.append(Blame(max(start, completion_start) - completion_start, end - completion_start, code, message))
    return out


def blame_to_tokens(
    blames: Sequence[Blame], offsets: Sequence[tuple[int, int]], text_length: int | None = None, completion_start: int = 0
) -> tuple[list[float], list[str]]:
    """Per token: 1.0 if its character span overlaps a blamed span, else 0.0; and its codes.

    ``offsets`` are the tokens' ``[start, end)`` character spans (a tokenizer's offset
    mapping; empty spans, e.g. special tokens, overlap nothing). If the tokens cover more
    than the completion (prompt + completion tokenized together), ``completion_start``
    shifts the completion-relative blame spans into the tokens' coordinates. The codes of
    a token are its distinct blamed codes, sorted and joined by commas ("" if none).

    Vectorised: one character mask per distinct code, reduced to token spans by a
    cumulative sum; Python only loops over blames and over the blamed tokens' code strings.
    """
    spans = np.asarray(offsets, dtype=np.int64).reshape(-1, 2)
    n = text_length if text_length is not None else int(max(spans[:, 1].max(initial=0), max((b.end + completion_start for b in blames), default=0)))
    codes = sorted({b.code for b in blames})
    if not codes or len(spans) == 0:
        return [0.0] * len(spans), [""] * len(spans)
    index = {c: i for i, c in enumerate(codes)}
    mask = np.zeros((len(codes), n), dtype=np.int64)
    for b in blames:
        mask[index[b.code], max(0, b.start + completion_start) : max(0, min(n, b.end + completion_start))] = 1
    csum = np.concatenate([np.zeros((len(codes), 1), dtype=np.int64), np.cumsum(mask, axis=1)], axis=1)
    starts, ends = np.clip(spans[:, 0], 0, n), np.clip(spans[:, 1], 0, n)
    hits = (csum[:, ends] - csum[:, np.minimum(starts, ends)]) > 0  # (codes, tokens)
    labels = hits.any(axis=0)
    names = np.asarray(codes, dtype=object)
    token_codes = [""] * len(spans)
    for t in np.flatnonzero(labels).tolist():
        token_codes[t] = ",".join(names[hits[:, t]])
    return labels.astype(float).tolist(), token_codes


def blame_heatmap_example(tokenizer, sample, result, title: str):
    """A heatmap card of ``sample.completion`` (anything with ``prompt`` and ``completion``)
    whose blamed tokens are 1, with their codes as notes and the score as metadata."""
    from tokenalign.report import HeatmapExample

    enc = tokenizer(sample.completion, add_special_tokens=False, return_offsets_mapping=True)
    offsets = [tuple(o) for o in enc["offset_mapping"]]
    labels, codes = blame_to_tokens(result.blame, offsets, len(sample.completion))
    meta = {"misalignment": result.misalignment, "violations": result.n_violations}
    if result.failed:
        meta["failed"] = result.failure or ""
    return HeatmapExample(sample.completion, offsets, labels, title=title, prompt=sample.prompt, notes=codes, meta=meta)
