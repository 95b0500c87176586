"""Evaluation metrics against hand-computed values (and brute force / nltk where it helps)."""

from __future__ import annotations

import itertools
import math
import random

import numpy as np
import pytest
import torch

from tokenalign.evaluate import metrics as M
from tokenalign.evaluate.metrics import (
    distinct_n,
    expected_max,
    fraction_above,
    kl_from_logprobs,
    mean_length,
    self_bleu,
    sentence_bleu,
    win_rate,
)

# ------------------------------------------------------------------------- distinct_n


def test_distinct_n_hand_computed():
    texts = ["a b a b", "a b c"]
    # unigrams a b a b | a b c: 7 in all, {a, b, c} distinct.
    assert distinct_n(texts, 1) == pytest.approx(3 / 7)
    # bigrams ab ba ab | ab bc: 5 in all, {ab, ba, bc}.
    assert distinct_n(texts, 2) == pytest.approx(3 / 5)
    # trigrams aba bab | abc: all distinct.
    assert distinct_n(texts, 3) == 1.0


def test_distinct_n_edges():
    assert distinct_n([], 1) == 0.0
    assert distinct_n(["", "   "], 1) == 0.0
    assert distinct_n(["a b c"], 4) == 0.0  # every text shorter than n
    # n-grams never cross text boundaries: "a" + "b" has no bigram.
    assert distinct_n(["a", "b"], 2) == 0.0
    # a collapsed policy: the same text every time -> 1 / number of texts.
    assert distinct_n(["x y z"] * 4, 2) == pytest.approx(1 / 4)
    for bad in (0, -1):
        with pytest.raises(ValueError):
            distinct_n(["a b"], bad)


def test_distinct_n_custom_tokenizer():
    assert distinct_n(["aab"], 1, tokenize=list) == pytest.approx(2 / 3)
    assert distinct_n(["aab", "ab"], 2, tokenize=list) == pytest.approx(2 / 3)  # aa ab | ab


# ------------------------------------------------------------------------- BLEU


def test_sentence_bleu_hand_computed():
    hyp = "the cat sat on the mat".split()
    ref = "the cat is on the mat".split()
    # p1 = 5/6 (the x2, cat, on, mat), p2 = 3/5 (the-cat, on-the, the-mat), p3 = 1/4
    # (on-the-mat), p4 = 0/3 -> method1: 0.1/3; equal lengths -> brevity penalty 1.
    expected = (5 / 6 * 3 / 5 * 1 / 4 * 0.1 / 3) ** 0.25
    assert expected == pytest.approx((1 / 240) ** 0.25)
    assert sentence_bleu([ref], hyp) == pytest.approx(expected, rel=1e-12)


def test_sentence_bleu_brevity_clipping_and_ties():
    # brevity: c = 2, r = 3 -> exp(1 - 3/2); precisions 1.
    assert sentence_bleu([["the", "cat", "sat"]], ["the", "cat"], max_n=2) == pytest.approx(math.exp(-0.5))
    # clipping: "the" counted at most once.
    assert sentence_bleu([["the", "cat"]], ["the"] * 3, max_n=1) == pytest.approx(1 / 3)
    # clipping uses the largest count in ONE reference (2), not the sum over references (3).
    assert sentence_bleu([["a", "b"], ["a", "a"]], ["a", "a", "a", "b"], max_n=1) == pytest.approx(3 / 4)
    # closest reference length ties go to the shorter one (2, not 4): c = 3 > 2 -> penalty 1.
    assert sentence_bleu([["a", "b"], ["a", "b", "c", "d"]], ["a", "b", "c"], max_n=1) == pytest.approx(1.0)
    # an order longer than the hypothesis counts as 0/1, smoothed to 0.1: (1 * 1 * 0.1 * 0.1) ** (1/4).
    assert sentence_bleu([["a", "b"]], ["a", "b"]) == pytest.approx(math.sqrt(0.1))


def test_sentence_bleu_zero_cases():
    assert sentence_bleu([["a", "b"]], ["x", "y"]) == 0.0  # no unigram match
    assert sentence_bleu([["a", "b"]], []) == 0.0  # empty hypothesis
    with pytest.raises(ValueError):
        sentence_bleu([], ["a"])
    with pytest.raises(ValueError):
        sentence_bleu([["a"]], ["a"], max_n=0)


def test_self_bleu_hand_computed():
    # "a b" vs {"a b", "c d"}: p1 = p2 = 1, penalty 1 -> 1 (twice); "c d" matches nothing -> 0.
    assert self_bleu(["a b", "a b", "c d"], max_n=2) == pytest.approx(2 / 3)
    # a text is never its own reference: "a b c" vs {"a b"} -> 2/3 (c > r, penalty 1);
    # "a b" vs {"a b c"} -> 1 * exp(1 - 3/2).
    assert self_bleu(["a b c", "a b"], max_n=1) == pytest.approx((2 / 3 + math.exp(-0.5)) / 2)
    # collapse -> 1, disjoint vocabularies -> 0.
    assert self_bleu(["p q r s t"] * 3) == pytest.approx(1.0)
    assert self_bleu(["a b c d", "e f g h", "i j k l"]) == 0.0


def test_self_bleu_edges():
    assert math.isnan(self_bleu([]))
    assert math.isnan(self_bleu(["only one text"]))
    assert self_bleu(["", ""]) == 0.0
    with pytest.raises(ValueError):
        self_bleu(["a", "b", "c"], max_texts=1)


def _random_corpus(seed: int, n_texts: int = 25) -> list[str]:
    rng = random.Random(seed)
    vocab = list("abcdef")
    texts = [" ".join(rng.choice(vocab) for _ in range(rng.randint(0, 9))) for _ in range(n_texts)]
    return texts + texts[:3]  # exact duplicates too


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_self_bleu_fast_path_equals_brute_force(seed):
    texts = _random_corpus(seed)
    toks = [t.split() for t in texts]
    for max_n in (1, 2, 4):
        brute = np.mean([sentence_bleu(toks[:i] + toks[i + 1 :], toks[i], max_n=max_n) for i in range(len(toks))])
        assert self_bleu(texts, max_n=max_n) == pytest.approx(brute, rel=1e-12, abs=1e-15)


def test_self_bleu_subsampling_is_deterministic():
    texts = _random_corpus(3, n_texts=40)
    a = self_bleu(texts, max_texts=10, seed=7)
    assert a == self_bleu(texts, max_texts=10, seed=7)
    keep = sorted(random.Random(7).sample(range(len(texts)), 10))
    assert a == pytest.approx(self_bleu([texts[i] for i in keep]))
    assert self_bleu(texts, max_texts=1000) == self_bleu(texts)  # nothing to drop


def test_bleu_matches_nltk_when_installed():
    nltk_bleu = pytest.importorskip("nltk.translate.bleu_score")
    smooth = nltk_bleu.SmoothingFunction().method1
    texts = _random_corpus(5, n_texts=30) + ["the cat sat on the mat", "the cat is on the mat"]
    toks = [t.split() for t in texts]
    for max_n in (2, 3, 4):
        w = (1 / max_n,) * max_n
        ref = np.mean([nltk_bleu.sentence_bleu(toks[:i] + toks[i + 1 :], toks[i], weights=w, smoothing_function=smooth)
                       for i in range(len(toks))])
        assert self_bleu(texts, max_n=max_n) == pytest.approx(ref, rel=1e-9)


# ------------------------------------------------------------------------- expected_max


def test_expected_max_hand_computed():
    # pairs of {1,2,3,4}: maxima 2,3,4,3,4,4 -> 20/6; weights C(i-1,1)/C(4,2) = 0,1,2,3 / 6.
    assert expected_max([[1, 2, 3, 4]], k=2) == pytest.approx(10 / 3)
    assert expected_max([[4, 1, 3, 2]], k=2) == pytest.approx(10 / 3)  # order does not matter
    assert expected_max([[1, 2, 3, 4], [5, 5, 5]], k=2) == pytest.approx((10 / 3 + 5) / 2)
    assert expected_max([[0.1, 0.7, 0.3]], k=3) == pytest.approx(0.7)  # n == k: the maximum
    assert expected_max([[0.1, 0.7, 0.4]], k=1) == pytest.approx(0.4)  # k == 1: the mean
    # ties: pairs of {2,2,2,1}: three (2,2) and three (2,1), all maxima 2.
    assert expected_max([[2, 2, 2, 1]], k=2) == pytest.approx(2.0)


def test_expected_max_equals_enumeration():
    rng = np.random.default_rng(0)
    s = rng.normal(size=7)
    brute = np.mean([max(c) for c in itertools.combinations(s, 3)])
    assert expected_max([s], k=3) == pytest.approx(brute, rel=1e-12)


def test_expected_max_large_n_closed_form():
    # scores 1..n: E[max of k without replacement] = k (n + 1) / (k + 1).
    n, k = 200, 25
    assert expected_max([list(range(1, n + 1))], k=k) == pytest.approx(k * (n + 1) / (k + 1), rel=1e-12)
    assert expected_max([[0.3] * 500], k=25) == pytest.approx(0.3, rel=1e-12)  # weights sum to 1


def test_expected_max_errors():
    with pytest.raises(ValueError, match="prompt 1 has 3 samples, fewer than k=4"):
        expected_max([[1, 2, 3, 4], [1, 2, 3]], k=4)
    with pytest.raises(ValueError, match="prompt 0 has NaN at index 2"):
        expected_max([[1, 2, float("nan")]], k=2)
    with pytest.raises(ValueError):
        expected_max([[1, 2]], k=0)
    with pytest.raises(ValueError, match="prompt 0 has 0 samples"):
        expected_max([[]], k=1)
    assert math.isnan(expected_max([], k=25))


# ------------------------------------------------------------------------- fraction_above, win_rate


def test_fraction_above():
    assert fraction_above([0.1, 0.5, 0.5, 0.9], 0.5) == pytest.approx(0.25)  # strictly above
    assert fraction_above(torch.tensor([0.0, 1.0]), -1.0) == 1.0
    assert fraction_above(np.array([0.0, 0.0]), 0.0) == 0.0  # threshold 0 stays a real threshold
    assert math.isnan(fraction_above([], 0.5))
    with pytest.raises(ValueError, match="index 2"):
        fraction_above([0.1, 0.2, float("nan")], 0.5)


def test_win_rate_hand_computed():
    policy, reference = [1, 2, 3, 4], [2, 2, 1, 5]
    # lower is better: win, tie, loss, win -> (2 + 0.5) / 4.
    assert win_rate(policy, reference) == pytest.approx(0.625)
    # higher is better: loss, tie, win, loss -> (1 + 0.5) / 4.
    assert win_rate(policy, reference, lower_is_better=False) == pytest.approx(0.375)
    assert win_rate(reference, policy) == pytest.approx(1 - 0.625)  # antisymmetric
    assert win_rate([float("inf")], [float("inf")]) == 0.5  # equal failure scores tie
    assert win_rate([0.3, 0.3], [0.3, 0.3]) == 0.5


def test_win_rate_errors():
    with pytest.raises(ValueError, match="aligned"):
        win_rate([1, 2], [1, 2, 3])
    with pytest.raises(ValueError, match="reference_scores has NaN at index 1"):
        win_rate([1, 2], [1, float("nan")])
    with pytest.raises(ValueError, match="policy_scores has NaN at index 0"):
        win_rate([float("nan")], [1])
    assert math.isnan(win_rate([], []))


# ------------------------------------------------------------------------- KL


def test_kl_hand_computed_and_padding_ignored():
    ln2 = math.log(2)
    nan, inf = float("nan"), float("inf")
    policy = torch.tensor([[-1.0, -2.0, -0.3], [-0.5, nan, -inf]])
    reference = torch.tensor([[-1.5, -1.0, -0.3], [-0.5 - ln2, 0.0, -inf]])
    mask = torch.tensor([[1, 1, 1], [1, 0, 0]])
    # log ratios log π - log π_ref: [0.5, -1, 0] and [ln 2] (padding ignored).
    out = kl_from_logprobs(policy, reference, mask)
    assert set(out) == {"kl_seq_mean", "kl_token_mean_k1", "kl_token_mean_k3"}
    assert out["kl_seq_mean"] == pytest.approx((-0.5 + ln2) / 2, rel=1e-6)
    assert out["kl_token_mean_k1"] == pytest.approx((0.5 - 1.0 + 0.0 + ln2) / 4, rel=1e-6)
    # k3 per token with d = log π - log π_ref: e^{-d} - 1 + d.
    k3 = [math.exp(-0.5) - 0.5, math.e - 2.0, 0.0, ln2 - 0.5]
    assert out["kl_token_mean_k3"] == pytest.approx(sum(k3) / 4, rel=1e-6)
    # a bool mask and a float mask mean the same.
    assert kl_from_logprobs(policy, reference, mask.bool()) == out
    assert kl_from_logprobs(policy, reference, mask.float()) == out


def test_kl_direction_matches_analytic_kl():
    # tokens sampled from π: both estimators approach KL(π || π_ref), not the reverse KL.
    gen = torch.Generator().manual_seed(0)
    pi = torch.tensor([0.9, 0.05, 0.05])
    ref = torch.tensor([0.3, 0.35, 0.35])
    tokens = torch.multinomial(pi, 200_000, replacement=True, generator=gen).view(-1, 4)
    out = kl_from_logprobs(pi.log()[tokens], ref.log()[tokens], torch.ones_like(tokens))
    kl = float((pi * (pi / ref).log()).sum())  # 0.794; the reverse KL is 1.033
    reverse = float((ref * (ref / pi).log()).sum())
    assert abs(kl - reverse) > 0.1
    assert out["kl_token_mean_k1"] == pytest.approx(kl, abs=0.01)
    assert out["kl_token_mean_k3"] == pytest.approx(kl, abs=0.01)
    assert out["kl_seq_mean"] == pytest.approx(4 * kl, abs=0.04)  # 4 tokens a sequence


def test_kl_k3_nonnegative_and_edges():
    g = torch.Generator().manual_seed(1)
    a, b = torch.randn(5, 7, generator=g), torch.randn(5, 7, generator=g)
    mask = torch.rand(5, 7, generator=g) > 0.3
    assert kl_from_logprobs(a, b, mask)["kl_token_mean_k3"] >= 0.0
    same = kl_from_logprobs(a, a, mask)
    assert same == {"kl_seq_mean": 0.0, "kl_token_mean_k1": 0.0, "kl_token_mean_k3": 0.0}
    # works on bf16 and on tensors that require grad.
    out = kl_from_logprobs(a.bfloat16().requires_grad_(), b.bfloat16(), mask)
    assert all(isinstance(v, float) for v in out.values())
    # no tokens: the sequence sums are 0, the token means undefined.
    empty_mask = kl_from_logprobs(a, b, torch.zeros(5, 7))
    assert empty_mask["kl_seq_mean"] == 0.0 and math.isnan(empty_mask["kl_token_mean_k1"])
    none = kl_from_logprobs(torch.zeros(0, 3), torch.zeros(0, 3), torch.zeros(0, 3))
    assert all(math.isnan(v) for v in none.values())
    with pytest.raises(ValueError, match="one shape"):
        kl_from_logprobs(a, b[:, :3], mask)
    with pytest.raises(ValueError, match="B, T"):
        kl_from_logprobs(a[0], b[0], mask[0])


# ------------------------------------------------------------------------- mean_length


def test_mean_length():
    assert mean_length([3, 5, 10]) == pytest.approx(6.0)
    assert mean_length(torch.tensor([2, 4])) == 3.0
    assert math.isnan(mean_length([]))
    with pytest.raises(ValueError, match="index 1"):
        mean_length([1, -2])


def test_package_exports():
    import tokenalign.evaluate as ev

    for name in M.__all__:
        assert getattr(ev, name) is getattr(M, name)
        assert name in ev.__all__
