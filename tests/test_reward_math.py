"""Aggregators, Plackett-Luce / Bradley-Terry losses, tie-breaking and output bounding
checked against hand-computed values (SPEC 1.1-1.3)."""

from __future__ import annotations

import math

import pytest
import torch

from tokenalign.rewards.aggregate import aggregate
from tokenalign.rewards.model import bound
from tokenalign.rewards.losses import (
    bradley_terry_loss,
    plackett_luce_loss,
    preference_order,
    token_label_loss,
)

# One list, two samples: A = [1, 2, 3] (L=3), B = [4] padded to 3 (L=1); Lbar = 2.
REWARDS = torch.tensor([[[1.0, 2.0, 3.0], [4.0, 99.0, -99.0]]])
MASK = torch.tensor([[[1, 1, 1], [1, 0, 0]]], dtype=torch.bool)


def lse(*xs: float) -> float:
    return math.log(sum(math.exp(x) for x in xs))


@pytest.mark.parametrize(
    "how, expected",
    [
        ("sum", [6.0, 4.0]),
        ("avg", [2 * 6 / 3, 2 * 4 / 1]),
        ("softmax", [2 * 2 * lse(0.5, 1.0, 1.5), 2 * 2 * 2.0]),
        ("softmin", [2 * -2 * lse(-0.5, -1.0, -1.5), 2 * -2 * -2.0]),
    ],
)
def test_aggregators_hand_computed(how, expected):
    got = aggregate(REWARDS, MASK, how=how, beta=2.0)
    assert got.shape == (1, 2)
    assert got[0].tolist() == pytest.approx(expected, rel=1e-6)


def test_padding_values_never_leak():
    noisy = REWARDS.clone()
    noisy[0, 1, 1:] = torch.tensor([1e6, -1e6])
    for how in ("sum", "avg", "softmax", "softmin"):
        assert torch.allclose(aggregate(noisy, MASK, how), aggregate(REWARDS, MASK, how))


def test_sample_mask_excludes_slots_from_lbar():
    rewards = torch.tensor([[[1.0, 1.0, 1.0, 1.0], [2.0, 0.0, 0.0, 0.0], [5.0, 5.0, 5.0, 5.0]]])
    mask = torch.tensor([[[1, 1, 1, 1], [1, 1, 0, 0], [1, 1, 1, 1]]], dtype=torch.bool)
    sample_mask = torch.tensor([[True, True, False]])
    got = aggregate(rewards, mask, "avg", sample_mask=sample_mask)
    lbar = (4 + 2) / 2
    assert got[0].tolist() == pytest.approx([lbar * 1.0, lbar * 1.0, 0.0])


def test_fixed_length_avg_equals_sum_up_to_constant():
    r = torch.randn(3, 4, 5)
    m = torch.ones(3, 4, 5, dtype=torch.bool)
    assert torch.allclose(aggregate(r, m, "avg"), aggregate(r, m, "sum"), atol=1e-6)


def test_empty_response_is_an_error():
    with pytest.raises(ValueError, match="no response tokens"):
        aggregate(torch.zeros(1, 2, 3), torch.tensor([[[1, 0, 0], [0, 0, 0]]], dtype=torch.bool))


def test_plackett_luce_hand_computed():
    scores = torch.tensor([[3.0, 1.0, 2.0]])
    expected = -((3 - lse(3, 1, 2)) + (1 - lse(1, 2)) + 0.0)
    assert plackett_luce_loss(scores).item() == pytest.approx(expected, rel=1e-6)


def test_plackett_luce_with_short_list_mask():
    scores = torch.tensor([[3.0, 1.0, 123.0]])
    mask = torch.tensor([[True, True, False]])
    expected = -(3 - lse(3, 1))
    assert plackett_luce_loss(scores, mask).item() == pytest.approx(expected, rel=1e-6)


def test_k2_plackett_luce_is_bradley_terry():
    chosen, rejected = torch.randn(7), torch.randn(7)
    pl = plackett_luce_loss(torch.stack([chosen, rejected], dim=-1), reduction="none")
    bt = bradley_terry_loss(chosen, rejected, reduction="none")
    assert torch.allclose(pl, bt, atol=1e-6)
    assert bt[0].item() == pytest.approx(math.log1p(math.exp(-(chosen[0] - rejected[0]).item())), rel=1e-5)


def test_preference_order_best_first_and_random_ties():
    pref = torch.tensor([[0.1, 0.9, 0.5]])
    assert preference_order(pref).tolist() == [[1, 2, 0]]
    tied = torch.tensor([[1.0, 0.0, 1.0]])
    firsts = set()
    gen = torch.Generator().manual_seed(0)
    for _ in range(50):
        order = preference_order(tied, generator=gen)[0].tolist()
        assert order[-1] == 1
        firsts.add(order[0])
    assert firsts == {0, 2}
    masked = preference_order(torch.tensor([[5.0, 1.0, 9.0]]), sample_mask=torch.tensor([[True, True, False]]))
    assert masked.tolist() == [[0, 1, 2]]
    with pytest.raises(ValueError, match="NaN"):
        preference_order(torch.tensor([[1.0, float("nan")]]))


def test_only_order_matters():
    scores = torch.tensor([[0.3, -0.2, 0.8]])
    o1 = preference_order(torch.tensor([[10.0, 1.0, 5.0]]))
    o2 = preference_order(torch.tensor([[0.11, 0.01, 0.1]]))
    assert torch.equal(o1, o2)
    assert plackett_luce_loss(scores.gather(-1, o1)) == plackett_luce_loss(scores.gather(-1, o2))


def test_bounded_output_values():
    z = torch.tensor([0.0, -50.0, 50.0])
    r = bound(z, "bounded")
    assert r[0].item() == pytest.approx(0.549, abs=5e-4)
    assert 0.0 < r[1].item() < 1e-6
    assert r[2].item() == pytest.approx(math.log1p(math.e), abs=1e-4)  # softplus(1) ~= 1.3133
    assert bound(z, "sigmoid")[0].item() == 0.5
    with pytest.raises(FloatingPointError):
        bound(torch.tensor([float("nan")]), "bounded")


def test_token_label_loss_ignores_minus_100():
    logits = torch.tensor([[0.0, 2.0, -7.0]])
    labels = torch.tensor([[1.0, -100.0, 0.0]])
    expected = (math.log(2) + math.log1p(math.exp(-7.0))) / 2
    assert token_label_loss(logits, labels).item() == pytest.approx(expected, rel=1e-5)
    none = token_label_loss(logits.requires_grad_(), torch.full((1, 3), -100.0))
    assert none.item() == 0.0 and none.requires_grad


def test_centered_sigmoid_is_two_p_minus_one():
    z = torch.tensor([0.0, 2.0])
    assert bound(z, "centered_sigmoid").tolist() == pytest.approx([0.0, 2 * (1 / (1 + math.exp(-2))) - 1])


def test_softmax_length_term_as_in_the_papers_code_and_its_correction():
    """Constant rewards, lengths 50 and 100 in one list: the paper's soft-max (temp x
    logsumexp x mean length) scores the longer sample higher by Lbar * beta * log 2; the
    log-mean-exp forms score both Lbar * r, as avg does."""
    r, beta, lengths = 0.5, 2.0, (50, 100)
    rewards = torch.full((1, 2, 100), r)
    mask = torch.zeros(1, 2, 100, dtype=torch.bool)
    for k, n in enumerate(lengths):
        mask[0, k, :n] = True
    lbar = sum(lengths) / 2
    soft = aggregate(rewards, mask, "softmax", beta)[0].tolist()
    assert soft == pytest.approx([lbar * (r + beta * math.log(n)) for n in lengths], rel=1e-6)
    assert soft[1] - soft[0] == pytest.approx(lbar * beta * math.log(2), rel=1e-6)
    hard = aggregate(rewards, mask, "softmin", beta)[0].tolist()
    assert hard == pytest.approx([lbar * (r - beta * math.log(n)) for n in lengths], rel=1e-6)
    for how in ("softmax_mean", "softmin_mean", "avg"):
        assert aggregate(rewards, mask, how, beta)[0].tolist() == pytest.approx([lbar * r, lbar * r], rel=1e-6)
    # the corrected forms are the paper's minus +-beta log L (hand-computed on the fixture)
    got = aggregate(REWARDS, MASK, "softmax_mean", beta=2.0)[0].tolist()
    assert got == pytest.approx([2 * 2 * (lse(0.5, 1.0, 1.5) - math.log(3)), 2 * 2 * 2.0], rel=1e-6)


def test_last_aggregator_reads_the_last_response_token_only():
    """``last`` is a sequence reward model's score: the reward at each sample's last real
    token, whatever came before it and whatever padding follows."""
    assert aggregate(REWARDS, MASK, "last")[0].tolist() == [3.0, 4.0]
    rewards = torch.tensor([[[5.0, -1.0, 7.0, 8.0], [2.0, 9.0, 1.0, 1.0]]])
    mask = torch.tensor([[[1, 1, 1, 0], [1, 1, 1, 1]]], dtype=torch.bool)
    assert aggregate(rewards, mask, "last", sample_mask=torch.tensor([[True, False]]))[0].tolist() == [7.0, 0.0]
    assert aggregate(rewards, mask, "last")[0].tolist() == [7.0, 1.0]
