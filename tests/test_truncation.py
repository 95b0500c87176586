"""Truncation keeps the prompt's tail and the response's head, and is counted."""

import logging

from tokenalign.data.truncation import TruncationCounter, truncate_pair


def test_fits_unchanged():
    assert truncate_pair([1, 2], [3], 3) == ([1, 2], [3], False)
    assert truncate_pair([1, 2], [3], None) == ([1, 2], [3], False)


def test_prompt_start_dropped_first_then_response_end():
    assert truncate_pair([1, 2, 3, 4], [5, 6], 4) == ([3, 4], [5, 6], True)
    assert truncate_pair([1, 2], [5, 6, 7, 8, 9], 4) == ([], [5, 6, 7, 8], True)
    assert truncate_pair([1, 2, 3], [5, 6, 7, 8, 9], 4, min_prompt_tokens=2) == ([2, 3], [5, 6], True)


def test_counter_logs_one_summary(caplog):
    counter = TruncationCounter(max_length=4)
    for cut in (True, False, True):
        counter.add(cut)
    with caplog.at_level(logging.WARNING):
        counter.log_summary()
    assert "2 of 3 examples truncated to 4 tokens" in caplog.text
