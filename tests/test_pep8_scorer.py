"""The pep8 scorer on hand-made code with known violations, and its failure handling."""

from __future__ import annotations

import logging

import pytest

import tokenalign.scorers.pep8 as pep8
from tokenalign.scorers import Blame, CallableScorer, failure_kind, summarize_scores
from tokenalign.scorers.pep8 import LegacyPep8Scorer, Pep8Scorer, Pep8ScorerConfig, check_syntax, pycodestyle_violations

HEADER = "def add(a, b):\n"


def test_one_known_violation_and_its_rate():
    r = Pep8Scorer().score_one("x=1\n")
    # per character of code: "x", "=", "1" (the newline is not code)
    assert (r.n_violations, r.n_chars, r.misalignment, r.failed) == (1, 4, 1 / 3, False)
    assert r.blame == [Blame(1, 2, "E225", "missing whitespace around operator")]
    assert pycodestyle_violations("x=1\n") == [(1, 1, "E225", "missing whitespace around operator")]


def test_clean_code_scores_zero():
    r = Pep8Scorer().score_one("    return a + b\n", HEADER)
    assert (r.misalignment, r.n_violations, r.failed, r.blame) == (0.0, 0, False, [])


def test_rate_counts_every_violation_over_code_characters():
    # E225 twice, E702 and E231 at the semicolon: 4 violations over 7 characters of code
    # (8 characters of completion: the legacy score's denominator).
    r = Pep8Scorer().score_one("a=1;b=2\n")
    assert sorted(b.code for b in r.blame) == ["E225", "E225", "E231", "E702"]
    assert r.misalignment == 4 / 7
    assert LegacyPep8Scorer().score_one("a=1;b=2\n").misalignment == 4 / 8


def test_unclosed_bracket_fails_and_scores_worse_than_messy_valid_code():
    scorer = Pep8Scorer()
    gamed = scorer.score_one("    return (a +\n", HEADER)
    messy = scorer.score_one("    x=a;y=b  \n    return x+y\n", HEADER)
    assert gamed.failed and gamed.failure.startswith("syntax: E901 TokenError")  # an unfinished program, but unclosed
    assert failure_kind(gamed) == "syntax" and failure_kind(messy) is None
    assert gamed.misalignment == 1.0 > messy.misalignment > 0
    # pycodestyle alone would have found nothing to charge: it stops at the tokenize error.
    assert [v[2] for v in pycodestyle_violations(HEADER + "    return (a +\n")] == ["E901"]


@pytest.mark.parametrize(
    "completion",
    [
        "    s = '''never closed\n",  # unterminated triple-quoted string
        "    s = 'never closed\n",  # unterminated string: Python < 3.12 tokenizes it as ERRORTOKEN
        "    if a:\n        x = 1\n      y = 2\n",  # inconsistent dedent
        "    x = 1 $ 2\n",  # stray character
    ],
)
def test_tokenize_failures(completion):
    r = Pep8Scorer().score_one(completion, HEADER)
    assert r.failed and failure_kind(r) == "syntax" and r.misalignment == 1.0


def test_truncated_block_passes_tokenize_but_not_compile():
    cut = "    for x in a:\n        if x:\n"  # a sample cut by the length limit inside a block
    assert check_syntax(HEADER + cut, "tokenize") is None
    assert check_syntax(HEADER + cut, "compile").startswith("syntax: IndentationError")
    assert not Pep8Scorer().score_one(cut, HEADER).failed
    compiled = Pep8Scorer(Pep8ScorerConfig(syntax_check="compile")).score_one(cut, HEADER)
    assert compiled.failed and compiled.failure.startswith("syntax: IndentationError")


def test_e9_from_pycodestyle_fails_even_without_a_syntax_check():
    r = Pep8Scorer(Pep8ScorerConfig(syntax_check="none")).score_one("    return (a +\n", HEADER)
    assert r.failed and r.failure.startswith("syntax: E901") and r.misalignment == 1.0


def test_custom_failure_score():
    r = Pep8Scorer(Pep8ScorerConfig(failure_score=5.0)).score_one("    return (a\n", HEADER)
    assert r.failed and r.misalignment == 5.0


def test_valid_rate_is_capped_at_the_failure_score():
    # Four characters of code, four violations (E225, E203, E703, W292): capped so that it
    # never scores worse than a syntax failure.
    r = Pep8Scorer().score_one("y=1 ;", "x = 1\n")
    assert (r.n_violations, r.failed, r.misalignment) == (4, False, 1.0)
    r = Pep8Scorer(Pep8ScorerConfig(failure_score=0.5)).score_one("y=1 ;", "x = 1\n")
    assert (r.failed, r.misalignment) == (False, 0.5)


def test_prompt_violations_are_not_charged():
    scorer = Pep8Scorer()
    assert scorer.score_one("    return a\n", "def add(a,b):\n").n_violations == 0
    r = scorer.score_one("    return a,b\n", "def add(a,b):\n")
    assert r.n_violations == 1 and r.blame[0].code == "E231"
    assert r.misalignment == 1 / len("returna,b")  # per character of code


def test_form_feed_in_the_prompt_does_not_shift_lines():
    # str.splitlines would split at the form feed and misplace every later violation.
    r = Pep8Scorer().score_one("y=1\n", "x = 1\n\x0c\n")
    assert [(b.code, b.start, b.end) for b in r.blame] == [("E225", 1, 2)]


def test_noqa_is_not_honoured_by_default():
    long_line = "x = '" + "a" * 80 + "'  # noqa\n"
    assert Pep8Scorer().score_one(long_line).n_violations == 1
    assert Pep8Scorer(Pep8ScorerConfig(honor_noqa=True)).score_one(long_line).n_violations == 0


def test_select_ignore_and_line_length_options():
    assert Pep8Scorer().score_one("x = 1*2\n").n_violations == 0  # E226 is in pycodestyle's default ignore list
    assert Pep8Scorer(Pep8ScorerConfig(select=["E", "W"])).score_one("x = 1*2\n").n_violations == 1
    assert Pep8Scorer(Pep8ScorerConfig(ignore=["E225"])).score_one("x=1\n").n_violations == 0
    line = "x = '" + "a" * 80 + "'\n"
    assert Pep8Scorer().score_one(line).n_violations == 1
    assert Pep8Scorer(Pep8ScorerConfig(max_line_length=100)).score_one(line).n_violations == 0
    with pytest.raises(ValueError, match="syntax_check"):
        Pep8ScorerConfig(syntax_check="parse")


def test_empty_completion():
    r = Pep8Scorer().score_one("  \n", HEADER)
    assert r.failed and r.failure == "empty completion" and failure_kind(r) == "empty"
    lenient = Pep8Scorer(Pep8ScorerConfig(empty_is_failure=False, no_code_is_failure=False)).score_one("", HEADER)
    assert (lenient.failed, lenient.misalignment) == (False, 0.0)


def _crash_on_boom(monkeypatch):
    """Make pycodestyle's checker raise IndexError on sources containing 'boom'."""
    real = pep8._NoqaBlindChecker.check_all

    def flaky(self, *args, **kwargs):
        if any("boom" in line for line in self.lines):
            raise IndexError("list index out of range")
        return real(self, *args, **kwargs)

    monkeypatch.setattr(pep8._NoqaBlindChecker, "check_all", flaky)


def test_checker_crash_fails_one_sample_and_is_logged_once(monkeypatch, caplog):
    _crash_on_boom(monkeypatch)
    scorer = Pep8Scorer()
    completions = ["    return a\n", "    boom = 1\n", "    return b\n", "    boom = 2\n"]
    with caplog.at_level(logging.WARNING, logger="tokenalign.scorers.pep8"):
        results = scorer.score(completions, [HEADER] * 4)
    assert len(results) == 4 and [r.failed for r in results] == [False, True, False, True]
    assert results[1].failure == "crash: IndexError: list index out of range"
    assert results[1].misalignment == 1.0 and scorer.crashes == 2
    assert len([rec for rec in caplog.records if "IndexError" in rec.getMessage()]) == 1
    summary = summarize_scores(results)
    assert (summary["n_crashes"], summary["crash_rate"], summary["syntax_failure_rate"]) == (2, 0.5, 0.0)


def test_summary_of_a_mixed_batch():
    completions = ["    return a + b\n", "    return a,b\n", "    return (a\n", ""]
    s = summarize_scores(Pep8Scorer().score(completions, [HEADER] * 4))
    assert s["n"] == 4 and s["n_syntax_failures"] == 1 and s["n_failed"] == 2
    assert s["syntax_failure_rate"] == 0.25 and s["empty_rate"] == 0.25 and s["violation_free_rate"] == 0.25
    e231 = 1 / len("returna,b")
    assert s["mean_misalignment"] == pytest.approx((0.0 + e231 + 1.0 + 1.0) / 4)
    assert s["mean_misalignment_valid"] == pytest.approx(e231 / 2)


def test_batch_checks_lengths():
    with pytest.raises(ValueError, match="2 prompts for 1 completions"):
        Pep8Scorer().score(["x = 1\n"], ["", ""])


def test_process_pool_gives_the_same_results():
    completions = [f"    x{i}=a+{i}  \n    return x{i}\n" for i in range(12)] + ["    return (a\n"]
    serial = Pep8Scorer().score(completions, [HEADER] * 13)
    pooled = Pep8Scorer(Pep8ScorerConfig(processes=2, min_pool_batch=1)).score(completions, [HEADER] * 13)
    assert pooled == serial and pooled[-1].failed and pooled[0].n_violations == 2


def test_callable_scorer_fails_samples_not_batches():
    def fn(prompt: str, completion: str) -> float:
        if completion == "nan":
            return float("nan")
        return 1 / len(completion)

    scorer = CallableScorer(fn, failure_score=9.0)
    results = scorer.score(["ab", "", "nan"])
    assert results[0].misalignment == 0.5 and not results[0].failed
    assert results[1].failure.startswith("crash: ZeroDivisionError") and results[1].misalignment == 9.0
    assert results[2].failure == "crash: ValueError: score is nan" and scorer.crashes == 2


def test_comment_line_share_exposes_comment_writing():
    """pycodestyle does not penalise comments, so evaluations report the comment-line share
    beside the score (a policy can trade code for comments)."""
    from tokenalign.evaluate.policy_eval import scorer_text_metrics
    from tokenalign.scorers.pep8 import comment_line_share

    code = "    x = 1\n\n    # add one\n    # then return\n    return x + 1\n"
    assert comment_line_share(code) == pytest.approx(2 / 4)  # the blank line does not count
    assert comment_line_share("") == 0.0 and comment_line_share("  \n") == 0.0
    assert comment_line_share('    s = "# not a comment line"\n') == 0.0
    commented = "    # return a + b\n    pass\n"
    scorer = Pep8Scorer()
    # The legacy score cannot tell them apart, the metric can; the score now fails a body without code.
    legacy = LegacyPep8Scorer()
    assert legacy.score_one(commented, HEADER).misalignment == legacy.score_one("    return a + b\n", HEADER).misalignment == 0.0
    assert scorer.score_one(commented, HEADER).failure.startswith("empty: no code")
    assert scorer.text_metrics([commented, "    return a + b\n"]) == {"comment_line_share": pytest.approx(0.25)}
    assert scorer_text_metrics(scorer, [commented]) == {"comment_line_share": 0.5}
    assert scorer_text_metrics(CallableScorer(lambda p, c: 0.0), ["# x"]) == {}  # scorers without it report nothing
