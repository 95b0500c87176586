"""PHF segments: tiling, sentence splitting, per-line PEP8 scores, per-sentence scoring with
any scorer, and per-token scores read off the segments."""

from __future__ import annotations

import pytest

pytest.importorskip("pycodestyle")

from tokenalign.data.segments import (  # noqa: E402
    PerSegmentScorer,
    Pep8SegmentScorer,
    document_score,
    split_segments,
    token_segment_scores,
)
from tokenalign.scorers.base import CallableScorer  # noqa: E402
from tokenalign.scorers.pep8 import Pep8ScorerConfig, pycodestyle_violations  # noqa: E402

CODE = "def f(x):\n    y=x\n    return y\n"  # E225 on line 2 only


@pytest.mark.parametrize(
    "text",
    [CODE, CODE.rstrip("\n"), "x = 1\n\n\ny = 2", "\n\n", "single", "", "a\n\nb\n"],
)
@pytest.mark.parametrize("kind", ["line", "sentence"])
def test_segments_tile_the_text(text, kind):
    spans = split_segments(text, kind)
    assert "".join(text[s:e] for s, e in spans) == text
    assert all(e > s for s, e in spans)
    assert all(a[1] == b[0] for a, b in zip(spans, spans[1:]))
    assert (spans == []) == (text == "")


def test_lines_keep_their_newline_and_end_only_at_newline():
    text = "a = 1\n\x0cb = 2\r\n\nc"  # a form feed and \r do not end a line (as for pycodestyle)
    assert [text[s:e] for s, e in split_segments(text, "line")] == ["a = 1\n", "\x0cb = 2\r\n", "\n", "c"]
    assert [CODE[s:e] for s, e in split_segments(CODE, "line")] == ["def f(x):\n", "    y=x\n", "    return y\n"]
    no_final = CODE.rstrip("\n")
    assert split_segments(no_final, "line")[-1] == (18, len(no_final))


def test_sentence_splitting_examples():
    def sents(text):
        return [text[s:e] for s, e in split_segments(text, "sentence")]

    assert sents("Hello world. How are you?  I am fine!") == ["Hello world. ", "How are you?  ", "I am fine!"]
    assert sents('He said "Stop." Then left... ok') == ['He said "Stop." ', "Then left... ", "ok"]
    assert sents("Pi is 3.14 today.") == ["Pi is 3.14 today."]
    assert sents("A title\nA paragraph. Two\n\n  Next") == ["A title\n", "A paragraph. ", "Two\n\n  ", "Next"]
    assert sents("\n\nLeading. x ") == ["\n\nLeading. ", "x "]
    with pytest.raises(ValueError):
        split_segments("x", "word")


def test_pep8_segment_scores_charge_the_line_reported():
    assert [v[2] for v in pycodestyle_violations(CODE)] == ["E225"]
    segs = Pep8SegmentScorer().score_document(CODE)
    assert segs == [(0, 10, 0.0), (10, 18, 1 / len("    y=x\n")), (18, 31, 0.0)]
    assert document_score(segs) == pytest.approx(1 / 8 / 3)


def test_pep8_segment_score_of_a_blank_line_and_the_cap():
    # W391 is reported on the last (blank, one-character) line.
    scorer = Pep8SegmentScorer(Pep8ScorerConfig(failure_score=10.0))
    assert scorer.score_document("x = 1\n\n") == [(0, 6, 0.0), (6, 7, 1.0)]
    capped = Pep8SegmentScorer(Pep8ScorerConfig(failure_score=0.5)).score_document("x = 1\n\n")
    assert capped[-1] == (6, 7, 0.5)


def test_pep8_segment_syntax_failure_scores_every_line_as_failed():
    scorer = Pep8SegmentScorer(Pep8ScorerConfig(failure_score=5.0))
    broken = "def f(x:\n    return x\n\n\nz = (1,\n"  # unclosed brackets: pycodestyle alone would say ~nothing
    segs = scorer.score_document(broken)
    assert [x for _, _, x in segs] == [5.0] * 5
    assert "".join(broken[s:e] for s, e, _ in segs) == broken
    assert scorer.syntax_failures == 1 and scorer.crashes == 0
    assert scorer.score_document("") == []


def test_pep8_segment_crash_is_counted_and_scored_as_failure(monkeypatch):
    import tokenalign.scorers.pep8 as pep8

    def boom(source, cfg=None):
        raise IndexError("pycodestyle bug")

    monkeypatch.setattr(pep8, "pycodestyle_violations", boom)
    scorer = Pep8SegmentScorer()
    out = scorer.score_documents([CODE, "x = 1\n"])
    assert [[x for _, _, x in segs] for segs in out] == [[1.0, 1.0, 1.0], [1.0]]
    assert scorer.crashes == 2


def test_per_segment_scorer_scores_all_sentences_in_one_call():
    calls = []

    class Bangs(CallableScorer):
        def score(self, completions, prompts=None):
            calls.append(list(completions))
            return super().score(completions, prompts)

    def fn(prompt, sentence):
        if "crash" in sentence:
            raise RuntimeError("model fell over")
        return sentence.count("!") / 10

    scorer = PerSegmentScorer(Bangs(fn, failure_score=9.0), "sentence")
    texts = ["Calm. Wow!! Fine.", "", "One crash here. Ok!"]
    out = scorer.score_documents(texts)
    assert len(calls) == 1 and calls[0] == ["Calm. ", "Wow!! ", "Fine.", "One crash here. ", "Ok!"]
    assert out == [[(0, 6, 0.0), (6, 12, 0.2), (12, 17, 0.0)], [], [(0, 16, 9.0), (16, 19, 0.1)]]
    assert scorer.score_document("Hi!") == [(0, 3, 0.1)]


def test_token_segment_scores_first_character_and_empty_spans():
    # "def f(x):\n    return x+1\n" as the pep8 tokenizer splits it: the token "\n   " starts
    # on line 1 (its newline) and runs into line 2; BOS/EOS and a control token have empty spans.
    segments = [(0, 10, 0.1), (10, 25, 0.2)]
    offsets = [(0, 0), (0, 3), (3, 9), (9, 13), (13, 13), (13, 20), (20, 25), (25, 25)]
    assert token_segment_scores(offsets, segments) == [0.1, 0.1, 0.1, 0.1, 0.2, 0.2, 0.2, 0.2]
    assert token_segment_scores([(0, 0), (0, 0)], segments) == [0.2, 0.2]  # nothing follows: last segment
    assert token_segment_scores([(30, 31)], segments) == [0.2]
    assert token_segment_scores([], segments) == []
    with pytest.raises(ValueError):
        token_segment_scores([(0, 0)], [])


def test_token_segment_scores_with_real_offsets():
    from transformers import AutoTokenizer

    from tokenalign.tasks.pep8 import base_model_path

    tok = AutoTokenizer.from_pretrained(base_model_path())
    text = "def f(x):\n    return x+1\n"
    enc = tok(text, add_special_tokens=False, return_offsets_mapping=True)
    offsets = [tuple(o) for o in enc["offset_mapping"]]
    spans = split_segments(text, "line")
    scores = token_segment_scores(offsets, [(s, e, float(k)) for k, (s, e) in enumerate(spans)])
    expected = [0.0 if s < spans[0][1] else 1.0 for s, _ in offsets]
    assert scores == expected
    assert any(s < spans[0][1] < e for s, e in offsets)  # a token does straddle the newline


def test_document_score_is_the_mean_segment_score():
    assert document_score([(0, 5, 0.0), (5, 6, 0.3), (6, 20, 0.6)]) == pytest.approx(0.3)
    assert document_score([]) == 0.0
