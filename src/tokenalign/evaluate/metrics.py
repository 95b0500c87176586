"""Metrics for the evaluation table and the policy benchmarks (after the PHF paper's evaluation,
Korbak et al., ICML 2023).

Misalignment alone can be faked (break syntax, collapse onto one safe answer, drift far
from the base model), so every evaluation reports it beside what would expose the fake:

- :func:`expected_max` — PHF's expected maximum misalignment over k samples of a prompt
  (the worst case a user meets in k tries), unbiased from n >= k samples;
- :func:`fraction_above` — the share of samples worse than a threshold;
- :func:`win_rate` — head-to-head share of aligned samples where one system beats another;
- :func:`distinct_n` and :func:`self_bleu` — diversity (mode collapse shows as low
  distinct-n and high self-BLEU);
- :func:`kl_from_logprobs` — KL(π || π_ref) estimated from samples of π;
- :func:`mean_length` — length, since shorter samples have fewer chances to misbehave.

Conventions: scores are misalignment (lower is better). A mean over nothing is NaN (undefined,
as in :func:`~tokenalign.evaluate.localization.roc_auc`), except :func:`distinct_n`, which is
0.0 when there are no n-grams. A NaN score is a bug upstream (scorers turn failures into a
fixed failure score, never NaN), so it raises ``ValueError`` naming where it is.

BLEU is implemented here (no extra dependency) and matches ``nltk.translate.bleu_score.
sentence_bleu`` with uniform weights and ``SmoothingFunction().method1`` (epsilon 0.1); the
tests check both hand-computed values and, when nltk is installed, nltk itself.
"""

from __future__ import annotations

import bisect
import math
import random
from collections import Counter
from collections.abc import Callable, Sequence
from functools import lru_cache

import numpy as np
import torch

__all__ = [
    "distinct_n",
    "sentence_bleu",
    "self_bleu",
    "expected_max",
    "fraction_above",
    "win_rate",
    "kl_from_logprobs",
    "mean_length",
]

Tokenize = Callable[[str], Sequence[str]]

BLEU_EPSILON = 0.1  # nltk SmoothingFunction().method1 default


def _tokens(text: str, tokenize: Tokenize | None) -> list:
    return list(text.split() if tokenize is None else tokenize(text))


def _ngrams(tokens: Sequence, n: int) -> list[tuple]:
    return [tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]


def _check_n(n: int, name: str = "n") -> None:
    if int(n) != n or n < 1:
        raise ValueError(f"{name} must be a positive integer, got {n!r}")


def _as_float_array(values, what: str) -> np.ndarray:
    """``values`` as a 1-D float64 array; ValueError naming the first NaN's index."""
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().double().numpy()
    arr = np.asarray(values, dtype=np.float64).reshape(-1)
    nan = np.flatnonzero(np.isnan(arr))
    if nan.size:
        raise ValueError(f"{what} has NaN at index {int(nan[0])}")
    return arr


# --------------------------------------------------------------------------- diversity


def distinct_n(texts: Sequence[str], n: int, tokenize: Tokenize | None = None) -> float:
    """Distinct n-grams / all n-grams over the corpus (n-grams never cross texts).

    Whitespace tokens by default, or ``tokenize(text) -> list``. 1.0 means no n-gram repeats
    anywhere; a collapsed policy that writes the same thing every time tends to 1/len(texts).
    0.0 when the corpus has no n-grams at all (every text shorter than n tokens).
    """
    _check_n(n)
    total, seen = 0, set()
    for text in texts:
        grams = _ngrams(_tokens(text, tokenize), n)
        total += len(grams)
        seen.update(grams)
    return len(seen) / total if total else 0.0


def _brevity_penalty(ref_len: int, hyp_len: int) -> float:
    if hyp_len > ref_len:
        return 1.0
    if hyp_len == 0:
        return 0.0
    return math.exp(1.0 - ref_len / hyp_len)


def _bleu_from_counts(matches: Sequence[int], totals: Sequence[int], hyp_len: int, ref_len: int) -> float:
    """BLEU from per-order clipped matches and hypothesis n-gram counts (uniform weights,
    method1 smoothing: a zero precision becomes epsilon / count). 0 when no unigram matches."""
    if matches[0] == 0:
        return 0.0
    log_p = 0.0
    for m, t in zip(matches, totals):
        t = max(1, t)  # as nltk: an order longer than the hypothesis is 0/1, then smoothed
        log_p += math.log((m if m > 0 else BLEU_EPSILON) / t)
    return _brevity_penalty(ref_len, hyp_len) * math.exp(log_p / len(matches))


def _closest_ref_len(ref_lens: Sequence[int], hyp_len: int) -> int:
    return min(ref_lens, key=lambda r: (abs(r - hyp_len), r))


def sentence_bleu(
    references: Sequence[Sequence], hypothesis: Sequence, max_n: int = 4
) -> float:
    """BLEU of one tokenized hypothesis against tokenized references.

    Modified n-gram precision (each hypothesis n-gram count clipped at its largest count in
    any one reference) for n = 1..max_n, geometric mean with uniform weights, smoothing
    method1 (a zero precision gets epsilon 0.1 matches), times the brevity penalty
    exp(1 - r/c) against the reference length closest to the hypothesis length c (ties: the
    shorter). Equal to nltk's ``sentence_bleu(..., weights=(1/max_n,)*max_n,
    smoothing_function=SmoothingFunction().method1)``.
    """
    _check_n(max_n, "max_n")
    if not references:
        raise ValueError("BLEU needs at least one reference")
    hyp = list(hypothesis)
    matches, totals = [], []
    for n in range(1, max_n + 1):
        counts = Counter(_ngrams(hyp, n))
        best: dict[tuple, int] = {}
        for ref in references:
            ref_counts = Counter(_ngrams(list(ref), n))
            for g in counts:
                best[g] = max(best.get(g, 0), ref_counts[g])
        matches.append(sum(min(c, best[g]) for g, c in counts.items()))
        totals.append(sum(counts.values()))
    return _bleu_from_counts(matches, totals, len(hyp), _closest_ref_len([len(r) for r in references], len(hyp)))


def self_bleu(
    texts: Sequence[str],
    max_n: int = 4,
    tokenize: Tokenize | None = None,
    max_texts: int | None = None,
    seed: int = 0,
) -> float:
    """Mean BLEU of each text against all the other texts as references (Zhu et al. 2018,
    Texygen): high means the samples repeat each other (mode collapse).

    Exactly :func:`sentence_bleu` per text, but in time linear in the corpus: for every
    n-gram we keep its two largest per-text counts (and the owner of the largest), so the
    clipping count "max over all texts but this one" is a lookup. With ``max_texts``, a
    subset of that many texts, drawn with ``random.Random(seed)`` (deterministic), serves as
    both hypotheses and references. NaN with fewer than two texts (no references).
    """
    _check_n(max_n, "max_n")
    texts = list(texts)
    if max_texts is not None:
        if max_texts < 2:
            raise ValueError(f"max_texts must be at least 2, got {max_texts}")
        if len(texts) > max_texts:
            keep = sorted(random.Random(seed).sample(range(len(texts)), max_texts))
            texts = [texts[i] for i in keep]
    if len(texts) < 2:
        return float("nan")
    toks = [_tokens(t, tokenize) for t in texts]
    counts = [[Counter(_ngrams(t, n)) for n in range(1, max_n + 1)] for t in toks]

    # Per order: n-gram -> [largest count, its owner, second largest count (other owner)].
    top: list[dict[tuple, list[int]]] = [{} for _ in range(max_n)]
    for i, per_order in enumerate(counts):
        for o, cnt in enumerate(per_order):
            table = top[o]
            for g, c in cnt.items():
                entry = table.get(g)
                if entry is None:
                    table[g] = [c, i, 0]
                elif c > entry[0]:
                    entry[2], entry[0], entry[1] = entry[0], c, i
                elif c > entry[2]:
                    entry[2] = c

    lengths = [len(t) for t in toks]
    sorted_lens = sorted(lengths)
    len_count = Counter(lengths)
    total = 0.0
    for i, per_order in enumerate(counts):
        matches, totals = [], []
        for o, cnt in enumerate(per_order):
            table = top[o]
            m = 0
            for g, c in cnt.items():
                best, owner, second = table[g]
                m += min(c, second if owner == i else best)
            matches.append(m)
            totals.append(sum(cnt.values()))
        total += _bleu_from_counts(matches, totals, lengths[i], _closest_other_len(sorted_lens, len_count, lengths[i]))
    return total / len(texts)


def _closest_other_len(sorted_lens: list[int], len_count: Counter, hyp_len: int) -> int:
    """The reference length closest to ``hyp_len`` (ties: shorter) among all lengths but one
    occurrence of ``hyp_len`` itself (the hypothesis)."""
    if len_count[hyp_len] >= 2:
        return hyp_len
    lo = bisect.bisect_left(sorted_lens, hyp_len) - 1  # largest length below
    hi = bisect.bisect_right(sorted_lens, hyp_len)  # smallest length above
    below = sorted_lens[lo] if lo >= 0 else None
    above = sorted_lens[hi] if hi < len(sorted_lens) else None
    if above is None or (below is not None and hyp_len - below <= above - hyp_len):
        return below  # type: ignore[return-value]
    return above


# --------------------------------------------------------------------------- misalignment


@lru_cache(maxsize=256)
def _max_of_k_weights(n: int, k: int) -> np.ndarray:
    """w_i = C(i-1, k-1) / C(n, k), i = 1..n: the probability that the i-th smallest of n
    values is the maximum of k drawn without replacement. Exact integer ratios."""
    denom = math.comb(n, k)
    return np.array([math.comb(i - 1, k - 1) / denom for i in range(1, n + 1)], dtype=np.float64)


def expected_max(scores_per_prompt: Sequence[Sequence[float]], k: int = 25) -> float:
    """PHF's expected maximum misalignment over k samples, averaged over prompts.

    Per prompt, from n >= k scores sorted ascending s_(1) <= ... <= s_(n), the unbiased
    estimator of E[max of k samples] (k drawn without replacement from the n):
    Σ_i C(i-1, k-1) / C(n, k) · s_(i). With n == k it is the plain maximum; with k == 1 the
    mean. Using every sample (rather than one max over the first k) cuts the variance.
    ValueError naming the prompt when it has fewer than k scores or a NaN; NaN for no prompts.
    """
    _check_n(k, "k")
    if len(scores_per_prompt) == 0:
        return float("nan")
    total = 0.0
    for p, scores in enumerate(scores_per_prompt):
        s = _as_float_array(scores, f"prompt {p}")
        if s.size < k:
            raise ValueError(f"prompt {p} has {s.size} samples, fewer than k={k}")
        total += float(np.sort(s) @ _max_of_k_weights(int(s.size), int(k)))
    return total / len(scores_per_prompt)


def fraction_above(scores: Sequence[float] | np.ndarray | torch.Tensor, threshold: float) -> float:
    """Share of samples whose score is strictly above ``threshold`` (misaligned by PHF's
    cut-off). NaN for no samples; ValueError naming the index of a NaN score."""
    s = _as_float_array(scores, "scores")
    if s.size == 0:
        return float("nan")
    if math.isnan(threshold):
        raise ValueError("threshold is NaN")
    return float(np.count_nonzero(s > threshold) / s.size)


def win_rate(
    policy_scores: Sequence[float] | np.ndarray | torch.Tensor,
    reference_scores: Sequence[float] | np.ndarray | torch.Tensor,
    lower_is_better: bool = True,
) -> float:
    """Share of aligned pairs (element i of each: the same prompt / sample slot) where the
    policy beats the reference, ties counted half; 0.5 is parity.

    ``lower_is_better`` (default, misalignment) decides what beating means. ValueError when
    the lengths differ or an entry is NaN (naming the side and index); NaN for no pairs.
    """
    a = _as_float_array(policy_scores, "policy_scores")
    b = _as_float_array(reference_scores, "reference_scores")
    if a.shape != b.shape:
        raise ValueError(f"{a.size} policy scores but {b.size} reference scores; they must be aligned")
    if a.size == 0:
        return float("nan")
    wins = np.count_nonzero(a < b) if lower_is_better else np.count_nonzero(a > b)
    ties = np.count_nonzero(a == b)
    return float((wins + 0.5 * ties) / a.size)


# --------------------------------------------------------------------------- KL and length


def kl_from_logprobs(
    policy_logprobs: torch.Tensor, reference_logprobs: torch.Tensor, mask: torch.Tensor
) -> dict[str, float]:
    """Monte-Carlo KL(π || π_ref) from samples of π, given both models' log-probs of the
    sampled tokens ([B, T]) and the mask of generated tokens ([B, T], bool or 0/1).

    - ``kl_seq_mean``: mean over the B sequences of Σ_t (log π - log π_ref) — the k1
      estimator of the sequence-level KL, what PHF / the KL-reward literature report;
    - ``kl_token_mean_k1``: the same log-ratio averaged over all masked tokens;
    - ``kl_token_mean_k3``: the low-variance, always >= 0 k3 estimator (Schulman 2020)
      averaged over masked tokens: (r - 1) - log r with r = π_ref / π.

    Unbiased only when the samples come from π itself (temperature 1, no top-p). Values at
    masked-out positions are ignored (padding may hold anything, even NaN / -inf). Computed
    in float64; NaN when there are no sequences / no tokens.
    """
    if not (policy_logprobs.shape == reference_logprobs.shape == mask.shape) or policy_logprobs.dim() != 2:
        raise ValueError(
            f"expected [B, T] tensors of one shape, got policy {tuple(policy_logprobs.shape)}, "
            f"reference {tuple(reference_logprobs.shape)}, mask {tuple(mask.shape)}"
        )
    with torch.no_grad():
        m = mask.detach().to(torch.bool)
        log_ratio = policy_logprobs.detach().double() - reference_logprobs.detach().double()
        log_ratio = torch.where(m, log_ratio, torch.zeros_like(log_ratio))
        per_seq = log_ratio.sum(dim=1)
        n_tok = int(m.sum())
        neg = -log_ratio  # log r, r = π_ref / π
        k3 = torch.where(m, torch.expm1(neg) - neg, torch.zeros_like(neg))
        nan = float("nan")
        return {
            "kl_seq_mean": float(per_seq.mean()) if per_seq.numel() else nan,
            "kl_token_mean_k1": float(log_ratio.sum() / n_tok) if n_tok else nan,
            "kl_token_mean_k3": float(k3.sum() / n_tok) if n_tok else nan,
        }


def mean_length(token_counts: Sequence[int] | np.ndarray | torch.Tensor) -> float:
    """Mean number of generated tokens per sample (NaN for none); shorter samples have
    fewer chances to misbehave, so the table shows length beside misalignment."""
    c = _as_float_array(token_counts, "token_counts")
    if c.size == 0:
        return float("nan")
    if (c < 0).any():
        raise ValueError(f"token_counts has a negative count at index {int(np.flatnonzero(c < 0)[0])}")
    return float(c.mean())
