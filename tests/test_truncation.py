"""Truncation keeps the prompt's tail and the response's head, never drops, and is counted."""

from __future__ import annotations

import logging

import pytest

from tokenalign.data.truncation import TruncationCounter, truncate_pair


def test_fits_unchanged():
    assert truncate_pair([1, 2], [3], 3) == ([1, 2], [3], False)
    assert truncate_pair([1, 2], [3], None) == ([1, 2], [3], False)
    assert truncate_pair([], [], 1) == ([], [], False)


def test_prompt_left_is_dropped_first():
    # 4 + 2 = 6 > 4: the prompt loses its 2 oldest tokens, the response is untouched.
    assert truncate_pair([1, 2, 3, 4], [5, 6], 4) == ([3, 4], [5, 6], True)
    # 3 + 2 = 5 > 4: one prompt token goes.
    assert truncate_pair([1, 2, 3], [5, 6], 4) == ([2, 3], [5, 6], True)


def test_then_the_response_end_is_cut():
    # The response alone is longer than 4: the whole prompt goes, then the response's end.
    assert truncate_pair([1, 2], [5, 6, 7, 8, 9], 4) == ([], [5, 6, 7, 8], True)


def test_min_prompt_tokens_are_kept():
    # Keep 2 prompt tokens (its tail: 2, 3), so the response gets 4 - 2 = 2 tokens.
    assert truncate_pair([1, 2, 3], [5, 6, 7, 8, 9], 4, min_prompt_tokens=2) == ([2, 3], [5, 6], True)
    # The minimum is only a floor: a prompt shorter than it is kept whole.
    assert truncate_pair([1], [5, 6, 7, 8, 9], 4, min_prompt_tokens=2) == ([1], [5, 6, 7], True)
    # A floor that leaves no room still keeps one response token.
    assert truncate_pair([1, 2, 3, 4, 5], [6, 7], 3, min_prompt_tokens=5) == ([4, 5], [6], True)


def test_prompt_only_and_edge_lengths():
    assert truncate_pair([1, 2, 3, 4, 5], [], 2) == ([4, 5], [], True)
    assert truncate_pair([1, 2], [3, 4], 1) == ([], [3], True)


def test_inputs_are_not_changed_and_tuples_work():
    prompt, response = [1, 2, 3], (4, 5)
    assert truncate_pair(prompt, response, 3) == ([3], [4, 5], True)
    assert prompt == [1, 2, 3] and response == (4, 5)


def test_bad_arguments():
    with pytest.raises(ValueError, match="max_length must be >= 1"):
        truncate_pair([1], [2], 0)
    with pytest.raises(ValueError, match="min_prompt_tokens must be >= 0"):
        truncate_pair([1], [2], 1, min_prompt_tokens=-1)


def test_counter_truncates_counts_and_logs_one_summary(caplog):
    counter = TruncationCounter(max_length=4, min_prompt_tokens=1)
    assert counter.truncate([1, 2, 3], [4, 5, 6]) == ([3], [4, 5, 6])
    assert counter.truncate([1], [2]) == ([1], [2])
    counter.add(True)
    assert (counter.seen, counter.truncated) == (3, 2)
    assert counter.summary() == "2 of 3 examples truncated to 4 tokens"
    with caplog.at_level(logging.WARNING, logger="tokenalign"):
        counter.log_summary("pairs")
    assert [r.getMessage() for r in caplog.records] == ["2 of 3 pairs truncated to 4 tokens"]


def test_counter_is_silent_when_nothing_was_cut(caplog):
    counter = TruncationCounter(max_length=8)
    counter.truncate([1, 2], [3])
    with caplog.at_level(logging.WARNING, logger="tokenalign"):
        counter.log_summary()
    assert caplog.records == []
