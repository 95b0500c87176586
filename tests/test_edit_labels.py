"""Edit-diff token labels on hand-made edits with a predictable word tokenizer."""

from __future__ import annotations

import random

import pytest
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from tokenalign.data.edit_labels import BAD, GOOD, IGNORE, EditLabelConfig, changed_char_spans, edit_labels

_ = IGNORE


@pytest.fixture(scope="module")
def words():
    """One token per whitespace-separated word (spaces are not tokens)."""
    vocab = {w: i for i, w in enumerate(["[UNK]", "the", "cat", "sat", "on", "a", "mat", "big", "dog", "x=1", "x", "=", "1"])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]")


def labels(original, edited, tok, **kw):
    bad, good = edit_labels(original, edited, tok, EditLabelConfig(**kw))
    return bad.labels, good.labels


def test_replacement(words):
    assert labels("the cat sat", "the dog sat", words) == ([_, BAD, _], [_, GOOD, _])


def test_pure_insertion_marks_the_neighbours_of_the_insertion_point(words):
    assert labels("the cat sat", "the big cat sat", words) == ([BAD, _, _], [_, GOOD, _, _])
    assert labels("the cat sat", "the big cat sat", words, mark_insertion_neighbours=False) == ([_, _, _], [_, GOOD, _, _])


def test_pure_deletion(words):
    assert labels("the big cat sat", "the cat sat", words) == ([_, BAD, _, _], [_, _, _])


def test_edits_at_start_and_end(words):
    assert labels("a cat sat", "the cat sat", words) == ([BAD, _, _], [GOOD, _, _])
    assert labels("the cat sat", "the cat sat on a mat", words)[1] == [_, _, _, GOOD, GOOD, GOOD]


def test_identical_texts_have_no_labels(words):
    bad, good = edit_labels("the cat sat", "the cat sat", words)
    assert bad.n_changed == good.n_changed == 0
    assert labels("the cat sat", "the cat sat", words, unchanged="neutral") == ([0.5] * 3, [0.5] * 3)


def test_whitespace_only_edit_on_code(words):
    # "x=1" -> "x = 1": the original single token is bad, the edited tokens around the
    # inserted spaces are good.
    bad, good = labels("x=1", "x = 1", words)
    assert bad == [BAD]
    assert good == [GOOD, GOOD, GOOD]
    # Trailing spaces removed: no token holds them, so the word before them is blamed; the
    # edit side has nothing inserted.
    assert labels("the cat   ", "the cat", words) == ([_, BAD], [_, _])


def test_byte_level_tokenizer_unicode(tiny_tokenizer):
    original, edited = "café = 東京🙂\n", "café = 京都🙂\n"
    bad, good = edit_labels(original, edited, tiny_tokenizer)
    bad_text = "".join(original[s:e] for (s, e), l in zip(bad.offsets, bad.labels) if l == BAD)
    good_text = "".join(edited[s:e] for (s, e), l in zip(good.offsets, good.labels) if l == GOOD)
    assert "東" in bad_text or "京" in bad_text
    assert "都" in good_text
    assert "café" not in bad_text


def test_every_changed_char_is_covered_by_a_labelled_token(tiny_tokenizer):
    rng = random.Random(0)
    alphabet = "abc =()\n:xé"
    for _ in range(50):
        original = "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 30)))
        chars = list(original)
        for _ in range(rng.randint(1, 4)):
            pos = rng.randrange(len(chars) + 1)
            if rng.random() < 0.5 and pos < len(chars):
                del chars[pos]
            else:
                chars.insert(pos, rng.choice(alphabet))
        edited = "".join(chars) or "z"
        bad, good = edit_labels(original, edited, tiny_tokenizer)
        bad_spans, good_spans = changed_char_spans(original, edited)
        for spans, side, value in ((bad_spans, bad, BAD), (good_spans, good, GOOD)):
            for s, e in spans:
                for c in range(s, e):
                    assert any(a <= c < max(b, a + 1) and l == value for (a, b), l in zip(side.offsets, side.labels)), (original, edited, c)
