"""Gold blame: violation spans (hand-computed) and their per-token labels."""

from __future__ import annotations

import numpy as np
import pytest

from tokenalign.scorers import Blame
from tokenalign.scorers.blame import blame_to_tokens, completion_blame, line_starts, violation_span
from tokenalign.scorers.pep8 import Pep8Scorer

LONG = "x = '" + "a" * 80 + "'\n"  # 86 characters before the newline


@pytest.mark.parametrize(
    "prompt, completion, code, span",
    [
        ("", LONG, "E501", (79, 86)),  # column 79 to the end of the line: "aaaaaa'"
        ("", "x = 1   \n", "W291", (5, 8)),  # the trailing spaces
        ("", "def f():\n    x = 1\n    \n    return x\n", "W293", (19, 23)),  # the whitespace-only line
        ("", "f(a,b)\n", "E231", (3, 4)),  # the comma
        ("", "x==1\n", "E225", (1, 3)),  # the whole operator
        ("", "x = f (1)\n", "E211", (5, 6)),  # the space before the bracket
        ("", "import os\ndef f():\n    pass\n", "E302", (10, 13)),  # `def` of the offending line
        ("", "x = 1\n\n\n\ny = 2\n", "E303", (6, 9)),  # the three blank lines above `y`
        ("", "x = 1\n\n\n", "W391", (6, 8)),  # both trailing blank lines
        ("", "x = 1", "W292", (4, 5)),  # the last character
        ("def f():\n", "   return 1\n", "E111", (0, 3)),  # the indentation
        ("def f():\n", "\treturn 1\n", "W191", (0, 1)),  # the tab
        ("def f():\n", "    return '\\d'\n", "W605", (12, 14)),  # backslash and the escaped character
        ("def f():\n", "    x = 1 # c\n    return x\n", "E261", (9, 10)),  # the single space before '#'
        ("def f(a, b):\n", "    return a if a == None else b\n", "E711", (18, 20)),  # `==`
        ("def f(a, b):\n", "    if a: return b\n", "E701", (8, 9)),  # the colon
    ],
)
def test_blame_spans(prompt, completion, code, span):
    r = Pep8Scorer().score_one(completion, prompt)
    spans = [(b.start, b.end) for b in r.blame if b.code == code]
    assert spans and spans[0] == span, r.blame


def test_every_span_is_non_empty_and_inside_the_completion():
    prompt = "def f(a,b):\n"
    completion = "    x=a;y=b  \n\n\n\n    if x == None : return(y)\n    l = lambda: 0\n\n\n"
    r = Pep8Scorer().score_one(completion, prompt)
    assert len(r.blame) >= 8
    assert all(0 <= b.start < b.end <= len(completion) for b in r.blame)


def test_span_reaching_back_into_the_prompt_is_clipped():
    prompt = "x = '" + "a" * 80  # the completion finishes the prompt's long line
    r = Pep8Scorer().score_one("bb'\ny = 1\n", prompt)
    assert r.blame == [Blame(0, 3, "E501", "line too long (88 > 79 characters)")]


def test_completion_blame_drops_prompt_spans_and_shifts():
    source = "x=1\ny=2\n"
    blame = completion_blame(source, [(1, 1, "E225", "a"), (2, 1, "E225", "b")], completion_start=4)
    assert blame == [Blame(1, 2, "E225", "b")]


def test_blank_run_wholly_in_the_prompt_is_not_charged():
    # The three blank lines above `y = 2` are the prompt's: E303 is reported on the
    # completion's line, but the completion cannot fix it.
    r = Pep8Scorer().score_one("y = 2\n", "x = 1\n\n\n\n")
    assert r.n_violations == 0


def test_violation_span_edge_cases():
    source = "x = 1\n"
    starts = line_starts(source)
    assert starts == [0, 6]
    assert violation_span(source, starts, 1, 5, "E999") == (4, 5)  # at the end of a line: the character before
    assert violation_span(source, starts, 9, 0, "E999") == (5, 6)  # a line past the end: clamped, still non-empty
    assert violation_span("", [0], 1, 0, "W391") == (0, 0)


def test_blame_to_tokens_by_overlap_with_codes():
    offsets = [(0, 1), (1, 2), (2, 5), (5, 6), (6, 6)]
    blames = [Blame(1, 3, "E225"), Blame(5, 6, "W291"), Blame(2, 4, "E231")]
    labels, codes = blame_to_tokens(blames, offsets)
    assert labels == [0.0, 1.0, 1.0, 1.0, 0.0]  # the empty (special) token overlaps nothing
    assert codes == ["", "E225", "E225,E231", "W291", ""]


def test_blame_to_tokens_shifts_into_prompt_plus_completion_coordinates():
    # Tokens of "ab" + "x=1": the completion starts at character 2.
    offsets = [(0, 2), (2, 3), (3, 4), (4, 5)]
    labels, codes = blame_to_tokens([Blame(1, 2, "E225")], offsets, completion_start=2)
    assert labels == [0.0, 0.0, 1.0, 0.0] and codes == ["", "", "E225", ""]


def test_blame_to_tokens_without_blame_and_with_short_text_length():
    assert blame_to_tokens([], [(0, 1), (1, 2)]) == ([0.0, 0.0], ["", ""])
    labels, _ = blame_to_tokens([Blame(0, 10, "E501")], [(0, 2), (2, 4), (4, 6)], text_length=3)
    assert labels == [1.0, 1.0, 0.0]  # blame beyond text_length is cut


def test_blame_to_tokens_matches_brute_force_overlap():
    rng = np.random.default_rng(0)
    bounds = np.sort(rng.choice(np.arange(1, 200), size=60, replace=False))
    offsets = list(zip([0, *bounds[:-1].tolist()], bounds.tolist()))
    blames = []
    for _ in range(15):
        start = int(rng.integers(0, 190))
        blames.append(Blame(start, start + int(rng.integers(1, 10)), str(rng.choice(["E225", "E501", "W291"]))))
    labels, codes = blame_to_tokens(blames, offsets)
    for (s, e), label, code in zip(offsets, labels, codes):
        hit = sorted({b.code for b in blames if b.start < e and s < b.end})
        assert label == float(bool(hit)) and code == ",".join(hit)


def test_blame_to_tokens_with_a_real_tokenizer(tiny_tokenizer):
    completion = "    y=a\n    return y\n"
    r = Pep8Scorer().score_one(completion, "def add(a, b):\n")
    assert [(b.code, completion[b.start : b.end]) for b in r.blame] == [("E225", "=")]
    enc = tiny_tokenizer(completion, add_special_tokens=False, return_offsets_mapping=True)
    offsets = [tuple(o) for o in enc["offset_mapping"]]
    labels, codes = blame_to_tokens(r.blame, offsets, len(completion))
    blamed = [completion[s:e] for (s, e), label in zip(offsets, labels) if label]
    assert blamed and all("=" in text for text in blamed)
    assert set(codes) == {"", "E225"}
