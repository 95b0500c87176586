"""autopep8 as the minimal editor: fixes violations, never touches the prompt, fails safely."""

from __future__ import annotations

import autopep8
import pytest

from tokenalign.editors import EditResult, edit_minimality, summarize_edits
from tokenalign.editors.autopep8_editor import Autopep8Config, Autopep8Editor
from tokenalign.scorers.pep8 import Pep8Scorer

HEADER = "def add(a, b):\n"


def test_edit_fixes_violations_and_keeps_the_prompt():
    bad = "    y=a+b   \n    return y\n"
    result = Autopep8Editor().edit_one(bad, HEADER)
    assert (result.changed, result.failed, result.original) == (True, False, bad)
    assert result.edited == "    y = a+b\n    return y\n"  # E225 and W291 fixed; E226 is ignored by default
    scorer = Pep8Scorer()
    assert scorer.score_one(result.edited, HEADER).misalignment == 0.0 < scorer.score_one(bad, HEADER).misalignment


def test_reindentation_uses_the_prompt_as_context():
    # E111 needs autopep8's whole-file re-indent, which its line_range would switch off.
    result = Autopep8Editor().edit_one("   x = a\n   return x\n", HEADER)
    assert result.edited == "    x = a\n    return x\n"


def test_prompt_with_its_own_violations_is_left_alone():
    prompt = "def add(a,b):\n"  # E231 in the prompt: not the completion's to fix
    result = Autopep8Editor().edit_one("    return a,b\n", prompt)
    assert result.edited == "    return a, b\n" and not result.failed


def test_edit_that_would_change_the_prompt_fails():
    # The completion starts on the prompt's line, so fixing it means fixing `x=1` too.
    result = Autopep8Editor().edit_one("\ny = 2\n", "x=1")
    assert result.failed and result.failure.startswith("prompt:")
    assert result.edited == result.original and not result.changed


def test_clean_code_is_returned_unchanged():
    result = Autopep8Editor().edit_one("    return a + b\n", HEADER)
    assert result == EditResult("    return a + b\n", "    return a + b\n", False)


@pytest.mark.parametrize(
    "completion, kind",
    [
        ("    return (a\n", "syntax"),  # does not tokenize: not edited
        ("  \n", "empty"),  # nothing to edit
    ],
)
def test_samples_that_are_not_edited(completion, kind):
    result = Autopep8Editor().edit_one(completion, HEADER)
    assert result.failed and result.failure.startswith(kind)
    assert result.edited == completion and not result.changed


def test_edit_that_would_delete_the_whole_completion_fails():
    result = Autopep8Editor().edit_one(";\n", "x = 1")  # E703: autopep8 removes the lone semicolon
    assert result.failed and result.failure.startswith("empty:") and result.edited == ";\n"


def test_compile_mode_refuses_truncated_blocks():
    cut = "    if a:\n"
    assert not Autopep8Editor().edit_one(cut, HEADER).failed
    assert Autopep8Editor(Autopep8Config(syntax_check="compile")).edit_one(cut, HEADER).failed


def test_options_reach_autopep8():
    line = "    return [" + ", ".join(["a"] * 30) + "]\n"  # 101 characters
    assert not Autopep8Editor().edit_one(line, HEADER).changed  # non-aggressive: E501 in a list stays
    split = Autopep8Editor(Autopep8Config(aggressive=1)).edit_one(line, HEADER)
    assert split.changed and split.edited.count("\n") == 2
    assert not Autopep8Editor(Autopep8Config(aggressive=1, max_line_length=120)).edit_one(line, HEADER).changed
    assert not Autopep8Editor(Autopep8Config(ignore=["E225"])).edit_one("    y=a\n    return y\n", HEADER).changed


def test_crash_fails_one_sample_only(monkeypatch):
    real = autopep8.fix_code

    def flaky(source, options=None, **kwargs):
        if "boom" in source:
            raise IndexError("list index out of range")
        return real(source, options=options, **kwargs)

    monkeypatch.setattr(autopep8, "fix_code", flaky)
    editor = Autopep8Editor()
    results = editor.edit(["    y=a\n    return y\n", "    boom=1\n", "    return a\n"], [HEADER] * 3)
    assert [r.failed for r in results] == [False, True, False] and results[0].changed
    assert results[1].failure == "crash: IndexError: list index out of range" and editor.crashes == 1
    summary = summarize_edits(results)
    assert summary["n_failed_crash"] == 1 and summary["changed_rate"] == pytest.approx(1 / 3)
    with pytest.raises(ValueError, match="1 prompts for 3 completions"):
        editor.edit(["a\n", "b\n", "c\n"], [HEADER])


class CharTokenizer:
    """One token per character (id = code point): makes token counts easy to compute by hand."""

    def __call__(self, texts, add_special_tokens=False):
        return {"input_ids": [[ord(ch) for ch in text] for text in texts]}


def test_edit_minimality_by_hand():
    tok = CharTokenizer()
    assert edit_minimality([("abcd", "abcd")], tok) == 1.0
    assert edit_minimality([("abcd", "abXd")], tok) == 6 / 8  # 3 of 4 kept, on both sides
    assert edit_minimality([("ab", "abcd")], tok) == 4 / 6  # insertions count too
    assert edit_minimality([("abcd", "abXd"), ("ab", "abcd"), ("", "")], tok) == pytest.approx((6 / 8 + 4 / 6) / 2)
    assert edit_minimality([], tok) != edit_minimality([], tok)  # NaN


def test_edit_minimality_of_an_autopep8_edit(tiny_tokenizer):
    bad = "    y=a+b   \n    return y\n"
    edited = Autopep8Editor().edit_one(bad, HEADER).edited
    assert edit_minimality([(bad, bad)], tiny_tokenizer) == 1.0
    assert 0.5 < edit_minimality([(bad, edited)], tiny_tokenizer) < 1.0
