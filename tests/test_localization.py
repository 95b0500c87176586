"""Localization AUC against hand-computed values."""

import math

import pytest

from tokenalign.evaluate.localization import localization_auc, roc_auc


def test_roc_auc_hand_computed():
    # positives {0.9, 0.4}, negatives {0.5, 0.1}: pairs won 1+1, 0+1 -> 3/4.
    assert roc_auc([0.9, 0.5, 0.4, 0.1], [1, 0, 1, 0]) == pytest.approx(0.75)
    # a tie between a positive and a negative counts half: (1 + 0.5) / 2.
    assert roc_auc([0.9, 0.3, 0.3], [1, 1, 0]) == pytest.approx(0.75)
    assert roc_auc([1, 2, 3], [0, 0, 1]) == 1.0
    assert math.isnan(roc_auc([1, 2], [1, 1]))


def test_localization_auc_low_reward_on_blamed_tokens_is_good():
    rewards = [[0.9, -0.8, 0.7], [0.1, 0.6]]
    blame = [[0, 1, 0], [1, 0]]
    assert localization_auc(rewards, blame) == 1.0
    assert localization_auc([[-r for r in x] for x in rewards], blame) == 0.0
    with pytest.raises(ValueError):
        localization_auc([[0.1]], [[1, 0]])
