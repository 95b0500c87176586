"""The gaming corpus: every way found to make the pep8 score look better without better code
scores no better than honest code with one violation (the same function, written plainly).
The legacy score (``pep8-legacy``) is shown to fall for each, so the test can fail."""

from __future__ import annotations

import pytest

from tokenalign.scorers.pep8 import LegacyPep8Scorer, Pep8Scorer

HEADER = "def add(a, b):\n"
HONEST = "    total=a\n    return total + b\n"  # one violation (E225)

# attempt -> completion
GAMING = {
    "unfinished expression": "    return a +\n",
    "two operators": "    return a + * b\n",
    "return return": "    return return\n",
    "assign to a literal": "    1 = a\n",
    "else without if": "    else:\n        return a\n",
    "English": "    this is not python at all\n",
    "comment padding after a violation": HONEST + "    # a comment that pads the character count of this sample\n" * 50,
    "docstring only": '    """Add a and b: junk junk junk junk junk junk junk junk."""\n',
    "pass": "    pass\n",
    "ellipsis": "    ...\n",
    "comment only": "    # TODO: add a and b\n",
    "docstring and pass": '    """Add."""\n    pass\n',
    "docstring padding": '    """' + "Padding words. " * 20 + '"""\n' + HONEST,
}


@pytest.mark.parametrize("attempt", sorted(GAMING))
def test_no_gaming_attempt_scores_better_than_honest_code(attempt):
    scorer = Pep8Scorer()
    honest = scorer.score_one(HONEST, HEADER)
    assert not honest.failed and honest.n_violations == 1
    gamed = scorer.score_one(GAMING[attempt], HEADER)
    assert gamed.misalignment >= honest.misalignment, (attempt, gamed)


def test_the_legacy_score_falls_for_the_corpus():
    """What the rules fix: the legacy score rates most attempts better than honest code."""
    legacy = LegacyPep8Scorer()
    honest = legacy.score_one(HONEST, HEADER).misalignment
    fooled = [a for a, c in GAMING.items() if legacy.score_one(c, HEADER).misalignment < honest]
    assert len(fooled) >= 12, fooled


def test_a_sample_cut_inside_a_block_is_scored_not_failed():
    """A sample cut at the token limit (a valid but unfinished program) is judged on its code."""
    cut = "    for x in a:\n        if x:\n"
    r = Pep8Scorer().score_one(cut, HEADER)
    assert not r.failed and r.misalignment == 0.0
    assert Pep8Scorer().score_one("    for x in a:\n        if x ==1:\n", HEADER).n_violations == 1


def test_junk_in_a_string_pads_nothing():
    """A string literal counts as at most its quotes and one character: the same statement
    with a long junk string scores as with a short one (more *code* still counts: a per-character
    rate rewards code that adds characters, as PHF's did)."""
    scorer = Pep8Scorer()
    short = scorer.score_one("    total=a\n    label = 'x'\n    return total + b\n", HEADER)
    padded = scorer.score_one("    total=a\n    label = '" + "padding " * 6 + "'\n    return total + b\n", HEADER)
    assert padded.misalignment == short.misalignment > 0
    legacy = LegacyPep8Scorer()
    assert legacy.score_one("    total=a\n    label = '" + "padding " * 6 + "'\n    return total + b\n", HEADER).misalignment < \
        legacy.score_one("    total=a\n    label = 'x'\n    return total + b\n", HEADER).misalignment
