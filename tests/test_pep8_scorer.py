"""The pep8 scorer, its gold blame and the autopep8 editor on hand-made code."""

from __future__ import annotations

import pytest

from tokenalign.editors.autopep8_editor import Autopep8Editor, edit_minimality
from tokenalign.scorers import Blame, summarize_scores
from tokenalign.scorers.blame import blame_to_tokens
from tokenalign.scorers.pep8 import Pep8Scorer, Pep8ScorerConfig

HEADER = "def add(a, b):\n"


def test_known_violation_and_rate():
    r = Pep8Scorer().score_one("x=1\n")
    assert (r.n_violations, r.misalignment, r.failed) == (1, 1 / 4, False)
    assert r.blame == [Blame(1, 2, "E225", "missing whitespace around operator")]


def test_clean_code_scores_zero():
    r = Pep8Scorer().score_one("    return a + b\n", HEADER)
    assert r.misalignment == 0.0 and not r.failed and r.blame == []


def test_unclosed_bracket_is_a_failure_worse_than_messy_valid_code():
    scorer = Pep8Scorer()
    gamed = scorer.score_one("    return (a +\n", HEADER)
    messy = scorer.score_one("    x=a;y=b  \n    return x+y\n", HEADER)
    assert gamed.failed and gamed.failure.startswith("syntax: TokenError")
    assert gamed.misalignment == 1.0 > messy.misalignment > 0
    assert summarize_scores([gamed, messy])["syntax_failure_rate"] == 0.5


def test_truncated_block_passes_tokenize_but_not_compile():
    cut = "    if a:\n"
    assert not Pep8Scorer().score_one(cut, HEADER).failed
    compiled = Pep8Scorer(Pep8ScorerConfig(syntax_check="compile")).score_one(cut, HEADER)
    assert compiled.failed and "syntax" in compiled.failure


def test_prompt_violations_are_not_charged():
    r = Pep8Scorer().score_one("    return a\n", "def add(a,b):\n")
    assert r.n_violations == 0
    r2 = Pep8Scorer().score_one("    return a,b\n", "def add(a,b):\n")
    assert r2.n_violations == 1 and r2.blame[0].code == "E231"
    assert "    return a,b\n"[r2.blame[0].start : r2.blame[0].end] == ","


def test_empty_completion_fails():
    r = Pep8Scorer().score_one("  \n", HEADER)
    assert r.failed and r.failure == "empty completion"


def test_checker_crash_fails_one_sample_only(monkeypatch):
    import tokenalign.scorers.pep8 as pep8

    real = pep8.pycodestyle_violations

    def flaky(source, cfg):
        if "boom" in source:
            raise IndexError("list index out of range")
        return real(source, cfg)

    monkeypatch.setattr(pep8, "pycodestyle_violations", flaky)
    scorer = Pep8Scorer()
    results = scorer.score(["    return a\n", "    boom = 1\n", "    return b\n"], [HEADER] * 3)
    assert len(results) == 3 and [r.failed for r in results] == [False, True, False]
    assert results[1].failure.startswith("crash: IndexError") and scorer.crashes == 1


@pytest.mark.parametrize(
    "code, completion, expected",
    [
        ("E501", "x = '" + "a" * 80 + "'\n", "a" * 6 + "'"),  # columns 79..85: the end of the line
        ("W291", "x = 1   \n", "   "),
        ("E231", "f(a,b)\n", ","),
        ("E302", "import os\ndef f():\n    pass\n", "def"),
    ],
)
def test_blame_spans(code, completion, expected):
    r = Pep8Scorer().score_one(completion)
    blame = [b for b in r.blame if b.code == code]
    assert blame, r.blame
    assert completion[blame[0].start : blame[0].end] == expected


def test_blame_to_tokens_by_overlap():
    offsets = [(0, 1), (1, 2), (2, 5), (5, 6)]
    labels, codes = blame_to_tokens([Blame(1, 3, "E225"), Blame(5, 6, "W291")], offsets)
    assert labels == [0.0, 1.0, 1.0, 1.0]
    assert codes == ["", "E225", "E225", "W291"]


def test_process_pool_gives_the_same_scores():
    completions = [f"    x{i}=a+{i}  \n    return x{i}\n" for i in range(300)]
    serial = Pep8Scorer().score(completions, [HEADER] * 300)
    pooled = Pep8Scorer(Pep8ScorerConfig(processes=2)).score(completions, [HEADER] * 300)
    assert [r.misalignment for r in serial] == [r.misalignment for r in pooled]


def test_autopep8_edit_fixes_without_touching_the_prompt(tiny_tokenizer):
    editor, scorer = Autopep8Editor(), Pep8Scorer()
    bad = "    y=a+b   \n    return y\n"
    result = editor.edit_one(bad, "def add(a,b):\n")
    assert result.changed and not result.failed
    assert result.edited == "    y = a+b\n    return y\n"
    assert scorer.score_one(result.edited, HEADER).misalignment < scorer.score_one(bad, HEADER).misalignment
    clean = editor.edit_one("    return a + b\n", HEADER)
    assert not clean.changed and clean.edited == clean.original
    broken = editor.edit_one("    return (a\n", HEADER)
    assert broken.failed and broken.edited == broken.original
    assert edit_minimality([("x = 1\n", "x = 1\n")], tiny_tokenizer) == 1.0
    assert 0.0 < edit_minimality([(bad, result.edited)], tiny_tokenizer) < 1.0
