"""Policy math against hand-computed values: GAE, reward-to-go, whitening, RLOO, KL
estimators, guidance weights, the PG / PPO losses, reward placement and span mapping."""

from __future__ import annotations

import math

import pytest
import torch

from tokenalign.objectives.advantages import discounted_cumsum, gae, kl_penalty, reward_to_go, rloo_baseline, whiten
from tokenalign.objectives.losses import (
    guidance_weights,
    ppo_policy_loss,
    rewards_with_endings,
    ppo_value_loss,
    reinforce_loss,
    sequence_pg_loss,
    weighted_mle_loss,
)
from tokenalign.policy.rewards import place_rewards, segment_ends, spans_to_tokens

T = torch.tensor


def test_gae_by_hand_with_padding():
    rewards = T([[1.0, 0.0, 2.0], [3.0, 9.0, 9.0]])
    values = T([[0.5, 1.0, 0.0], [1.0, 5.0, 5.0]])
    mask = T([[1, 1, 1], [1, 0, 0]]).bool()
    adv, ret = gae(rewards, values, mask, gamma=1.0, lam=0.5)
    # row 0: deltas 1.5, -1, 2 -> A2 = 2, A1 = -1 + .5*2 = 0, A0 = 1.5 + .5*0 = 1.5
    # row 1: one real token, no bootstrap past the end: delta = 3 - 1 = 2
    assert torch.allclose(adv, T([[1.5, 0.0, 2.0], [2.0, 0.0, 0.0]]))
    assert torch.allclose(ret, T([[2.0, 1.0, 2.0], [3.0, 0.0, 0.0]]))


def test_gae_with_lambda_one_and_zero_values_is_discounted_return():
    rewards, values, mask = T([[1.0, 1.0]]), torch.zeros(1, 2), torch.ones(1, 2, dtype=torch.bool)
    adv, _ = gae(rewards, values, mask, gamma=0.9, lam=1.0)
    assert torch.allclose(adv, T([[1.9, 1.0]]))
    assert torch.allclose(reward_to_go(rewards, mask, gamma=0.9), T([[1.9, 1.0]]))
    assert torch.allclose(discounted_cumsum(T([[1.0, 2.0, 4.0]]), 0.5), T([[3.0, 4.0, 4.0]]))


def test_reward_to_go_ignores_padding():
    r = T([[1.0, 2.0, 100.0]])
    assert torch.allclose(reward_to_go(r, T([[1, 1, 0]]).bool()), T([[3.0, 2.0, 0.0]]))


def test_whiten_uses_masked_entries_only():
    x, mask = T([[1.0, 2.0, 3.0, 100.0]]), T([[1, 1, 1, 0]]).bool()
    assert torch.allclose(whiten(x, mask), T([[-1.0, 0.0, 1.0, 0.0]]), atol=1e-6)
    assert torch.allclose(whiten(x, mask, shift_mean=False), T([[1.0, 2.0, 3.0, 0.0]]), atol=1e-6)


def test_rloo_leave_one_out():
    adv = rloo_baseline(T([1.0, 2.0, 3.0, 4.0, 4.0, 4.0]), group_size=3)
    assert torch.allclose(adv, T([-1.5, 0.0, 1.5, 0.0, 0.0, 0.0]))
    with pytest.raises(ValueError):
        rloo_baseline(T([1.0, 2.0, 3.0]), group_size=2)


def test_kl_estimators():
    logp, ref, mask = T([[-1.0, -2.0, -7.0]]), T([[-1.5, -1.0, 0.0]]), T([[1, 1, 0]]).bool()
    assert torch.allclose(kl_penalty(logp, ref, mask, "k1"), T([[0.5, -1.0, 0.0]]))
    k3 = [math.exp(-0.5) - 1 + 0.5, math.exp(1.0) - 1 - 1.0, 0.0]
    assert torch.allclose(kl_penalty(logp, ref, mask, "k3"), T([k3]), atol=1e-6)


def test_guidance_weights_variants():
    r, mask = T([[1.0, 3.0, 5.0]]), T([[1, 1, 0]]).bool()
    assert torch.allclose(guidance_weights(r, mask), T([[0.25, 0.75, 0.0]]))
    assert torch.allclose(guidance_weights(r, mask, use_reward_to_go=True), T([[4 / 7, 3 / 7, 0.0]]))
    assert torch.allclose(guidance_weights(T([[0.0, math.log(3.0), 9.0]]), mask, use_exp=True), T([[0.25, 0.75, 0.0]]))
    assert torch.equal(guidance_weights(T([[1.0, -1.0]]), torch.ones(1, 2, dtype=torch.bool)), torch.zeros(1, 2))


def test_ending_token_gets_its_rows_mean_reward():
    # row 0: text rewards 0.2, 0.4 then its EOS (column 2); row 1: no ending (cut at the limit)
    r = T([[0.2, 0.4, 0.0, 0.0], [1.0, 3.0, 0.0, 0.0]])
    mask = T([[1, 1, 1, 0], [1, 1, 0, 0]]).bool()
    out = rewards_with_endings(r, mask, torch.tensor([2, -1]))
    assert torch.allclose(out, T([[0.2, 0.4, 0.3, 0.0], [1.0, 3.0, 0.0, 0.0]]))
    assert torch.allclose(guidance_weights(out, mask)[0], T([0.2 / 0.9, 0.4 / 0.9, 0.3 / 0.9, 0.0]))
    assert torch.equal(rewards_with_endings(r, mask, torch.tensor([-1, -1])), r)


def test_weighted_mle_loss():
    logp = T([[-1.0, -2.0], [-4.0, -9.0]])
    w = T([[0.25, 0.75], [1.0, 0.0]])
    mask = T([[1, 1], [1, 0]]).bool()
    assert math.isclose(weighted_mle_loss(logp, w, mask).item(), (1.75 + 4.0) / 2)


def test_reinforce_loss_with_max_entropy_term():
    logp, ret, mask = T([[-0.5, -2.0, -3.0]]), T([[1.0, -1.0, 5.0]]), T([[1, 1, 0]]).bool()
    assert math.isclose(reinforce_loss(logp, ret, mask).item(), (0.5 - 2.0) / 2)
    neg_ent = T([[-1.0, -3.0, -8.0]])
    assert math.isclose(reinforce_loss(logp, ret, mask, neg_ent, 0.5).item(), -0.75 + 0.5 * -2.0)


def test_reinforce_gradient_is_reward_times_score():
    logits = torch.zeros(1, 2, 3, requires_grad=True)
    logp = torch.log_softmax(logits, -1)[..., 0]
    reinforce_loss(logp, T([[2.0, 0.0]]), torch.ones(1, 2, dtype=torch.bool)).backward()
    # d/dz_a of -r log softmax(z)_0 / n = -r (1[a=0] - 1/3) / 2
    assert torch.allclose(logits.grad[0, 0], T([-2 * (2 / 3) / 2, 2 * (1 / 3) / 2, 2 * (1 / 3) / 2]))
    assert torch.allclose(logits.grad[0, 1], torch.zeros(3))


def test_ppo_policy_loss_clips_both_ways():
    old = torch.zeros(1, 2)
    logp = T([[math.log(1.5), math.log(0.5)]])
    adv = T([[1.0, -1.0]])
    loss, stats = ppo_policy_loss(logp, old, adv, torch.ones(1, 2, dtype=torch.bool), clip=0.2)
    # token 1: max(-1.5, -1.2) = -1.2; token 2: max(0.5, 0.8) = 0.8
    assert math.isclose(loss.item(), (-1.2 + 0.8) / 2, rel_tol=1e-6)
    assert stats["clip_fraction"] == 1.0
    loss, stats = ppo_policy_loss(old, old, adv, torch.ones(1, 2, dtype=torch.bool))
    assert math.isclose(loss.item(), 0.0, abs_tol=1e-7) and stats["clip_fraction"] == 0.0


def test_ppo_value_loss_clipped():
    values, old, ret = T([[2.0, 0.5]]), T([[1.0, 1.0]]), T([[0.0, 1.0]])
    loss = ppo_value_loss(values, old, ret, torch.ones(1, 2, dtype=torch.bool), clip=0.2)
    # token 1: max(4, 1.44) = 4; token 2: max(0.25, 0.04) = 0.25
    assert math.isclose(loss.item(), 0.5 * (4 + 0.25) / 2)


def test_sequence_pg_loss():
    logp, mask = T([[-1.0, -1.0], [-2.0, -5.0]]), T([[1, 1], [1, 0]]).bool()
    assert math.isclose(sequence_pg_loss(logp, T([1.0, -1.0]), mask).item(), -(1.0 * -2.0 + -1.0 * -2.0) / 2)


def test_place_rewards_sequence_token_segment():
    mask = T([[1, 1, 0], [1, 0, 0], [0, 0, 0]]).bool()
    seq = place_rewards("sequence", mask, scores=T([5.0, 7.0, 9.0]))
    assert torch.equal(seq, T([[0.0, 5.0, 0.0], [7.0, 0.0, 0.0], [0.0, 0.0, 0.0]]))
    tok = T([[1.0, 2.0, 3.0, 4.0, 99.0]])
    m5 = T([[1, 1, 1, 1, 0]]).bool()
    assert torch.equal(place_rewards("token", m5, token_rewards=tok), T([[1.0, 2.0, 3.0, 4.0, 0.0]]))
    seg = place_rewards("segment", m5, token_rewards=tok, segment_end=T([[0, 1, 0, 0, 0]]).bool())
    assert torch.equal(seg, T([[0.0, 3.0, 0.0, 7.0, 0.0]]))  # the last real token closes the tail
    with pytest.raises(ValueError, match="token reward"):
        place_rewards("token", m5, scores=T([1.0]))


def test_spans_to_tokens_moves_each_value_once():
    src = [(0, 2), (2, 5), (5, 5), (5, 9)]
    out = spans_to_tokens(src, [1.0, 2.0, 3.0, 4.0], [(0, 3), (3, 6), (6, 9), (9, 9)])
    assert out == [1.0, 2.0, 4.0, 0.0]
    assert spans_to_tokens(src, [1.0, 2.0, 3.0, 4.0], []) == []


def test_segment_ends_lines(tiny_tokenizer):
    ids = tiny_tokenizer("x = 1\ny = 2\nz", add_special_tokens=False)["input_ids"]
    ends = segment_ends(tiny_tokenizer, ids, "line")
    pieces = [tiny_tokenizer.decode([i]) for i in ids]
    assert ends[-1] and sum(ends) == 3
    assert all(("\n" in p) == e for p, e in zip(pieces[:-1], ends[:-1]))


def test_dense_plus_sequence_reward_adds_the_score_on_the_last_token():
    from tokenalign.policy.rewards import DensePlusSequenceReward, RewardOutput

    class Dense:
        def __call__(self, samples):
            return RewardOutput([0.5, 0.0], [[0.1, 0.4], []])

    class Seq:
        def __call__(self, samples):
            return RewardOutput([-1.0, -2.0], None, ["a", "b"])

    out = DensePlusSequenceReward(Dense(), Seq(), weight=0.5)([None, None])
    assert out.token_rewards == [[0.1, 0.4 - 0.5], []]
    assert out.scores == [0.5 - 0.5, -1.0] and out.details == ["a", "b"]


def test_blame_reward_puts_each_violation_on_its_token_and_sums_to_the_score():
    """Gold dense rewards from pycodestyle's blame, by hand: ``y=1`` misses the spaces
    around ``=`` (E225, blamed on ``=``), ``z = 2  # ok`` is clean; m = 1 / (characters of
    code) goes on the ``=`` token. A syntax failure puts the whole failure score on the last token."""
    from tokenalign.policy.rewards import BlameReward
    from tokenalign.rollout.generate import Sample
    from tokenalign.scorers.pep8 import Pep8Scorer
    from tokenalign.tasks.pep8 import complete_lines, load_tokenizer

    tok = load_tokenizer()
    prompt = "def f(x):\n"

    def sample(completion: str) -> Sample:
        ids = tok(completion, add_special_tokens=False)["input_ids"]
        return Sample(prompt, completion, ids, True, ids, tok(prompt, add_special_tokens=False)["input_ids"])

    good, bad = sample("    y=1\n    z = 2  # ok\n    return y + z\n"), sample("    return (x\n")
    out = BlameReward(Pep8Scorer(), 1.0, complete_lines, tok)([good, bad])
    m = 1 / len("y=1z=2returny+z")  # the code's characters: no whitespace, no comment
    assert out.scores[0] == pytest.approx(-m) and out.scores[1] == pytest.approx(-1.0)
    row = out.token_rewards[0]
    pieces = [tok.decode([i]) for i in good.generated_ids]
    blamed = [i for i, r in enumerate(row) if r != 0.0]
    assert len(blamed) == 1 and "=" in pieces[blamed[0]] and row[blamed[0]] == pytest.approx(-m)
    assert sum(row) == pytest.approx(out.scores[0])
    assert out.token_rewards[1][:-1] == [0.0] * (len(bad.generated_ids) - 1)
    assert out.token_rewards[1][-1] == pytest.approx(-1.0)


def test_constraint_reward_is_distribution_matchings_b_by_hand():
    """``reward.source: constraint``: reward.scale iff the sample compiles and pycodestyle finds
    no violation, else 0, by hand on three samples (clean; ``y=1`` misses the spaces around
    ``=``; an unclosed bracket fails). It is exactly the b that cdpg matches (score >= 0)."""
    from tokenalign.config import from_dict
    from tokenalign.errors import ConfigError
    from tokenalign.objectives.dm import DistributionMatching
    from tokenalign.policy.config import TrainConfig
    from tokenalign.policy.rewards import ConstraintReward, ScorerReward, make_reward_source
    from tokenalign.rollout.generate import Sample
    from tokenalign.scorers.pep8 import Pep8Scorer
    from tokenalign.tasks.pep8 import complete_lines, load_tokenizer

    tok = load_tokenizer()
    prompt = "def f(x):\n"

    def sample(completion: str) -> Sample:
        ids = tok(completion, add_special_tokens=False)["input_ids"]
        return Sample(prompt, completion, ids, True, ids, tok(prompt, add_special_tokens=False)["input_ids"])

    samples = [sample("    y = x + 1\n    return y\n"), sample("    y=1\n    return y\n"), sample("    return (x\n")]
    out = ConstraintReward(Pep8Scorer(), 2.0, complete_lines)(samples)
    assert out.scores == [2.0, 0.0, 0.0] and out.token_rewards is None
    assert [r.failed for r in out.details] == [False, False, True] and out.details[1].n_violations == 1
    gold = torch.tensor(ScorerReward(Pep8Scorer(), 1.0, complete_lines)(samples).scores)
    assert DistributionMatching.constraint(gold).tolist() == [s > 0 for s in out.scores]
    cfg = from_dict(TrainConfig, {"objective": "ppo", "reward": {"source": "constraint"}})
    assert isinstance(make_reward_source(cfg.reward, Pep8Scorer(), complete_lines, tok, ""), ConstraintReward)
    with pytest.raises(ConfigError, match="needs per-token rewards"):
        from_dict(TrainConfig, {"objective": "ppo",
                                "reward": {"source": "constraint", "placement": "token"}}).validate_sources()
