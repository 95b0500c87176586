"""Ranked lists from scored samples, and how well token guidance orders them.

The alternating loop (``tokenalign align``; Yang et al., NeurIPS 2023) learns r_φ from
rankings of K samples per prompt and measures it on rankings it never saw. This module
holds the pure parts of that: grouping K consecutive samples into a ranked list, a list's
sequence scores e_φ from its token rewards (:mod:`tokenalign.rewards.aggregate`), and the
pairwise accuracy of those scores against the preference order.
"""

from __future__ import annotations

from itertools import combinations

import torch

from tokenalign.rewards.aggregate import aggregate
from tokenalign.rewards.learn import RankedExample

__all__ = ["group_ranked_lists", "sequence_scores", "pair_accuracy"]


def group_ranked_lists(prompts: list[str], texts: list[str], preferences: list[float], k: int,
                       keep_empty: bool = False) -> list[tuple[RankedExample, list[int]]]:
    """Ranked lists of K consecutive samples per prompt: ``(RankedExample, kept indices)``.

    Empty responses are left out (no token to carry a reward) unless ``keep_empty`` (r_φ
    reads an end token: every response has one); a list needs two responses that are not
    all tied (all tied: no preference signal)."""
    out = []
    for i in range(len(texts) // k):
        keep = [i * k + j for j in range(k) if keep_empty or texts[i * k + j].strip()]
        if len(keep) >= 2 and len({preferences[j] for j in keep}) > 1:
            out.append((RankedExample(prompts[i * k], tuple(texts[j] for j in keep),
                                      tuple(preferences[j] for j in keep)), keep))
    return out


def sequence_scores(token_rewards: list[list[float]], aggregator: str, beta: float) -> list[float]:
    """One list's sequence scores e_φ from its samples' token rewards (any aggregator of :mod:`tokenalign.rewards.aggregate`)."""
    t = max(len(r) for r in token_rewards)
    rewards = torch.zeros(1, len(token_rewards), max(t, 1))
    mask = torch.zeros_like(rewards, dtype=torch.bool)
    for j, r in enumerate(token_rewards):
        rewards[0, j, : len(r)] = torch.tensor(r, dtype=torch.float32)
        mask[0, j, : len(r)] = True
    if not bool(mask.any(-1).all()):  # a response with no token (cannot happen for kept responses)
        return [float("nan")] * len(token_rewards)
    return aggregate(rewards, mask, aggregator, beta)[0].tolist()


def pair_accuracy(rows: list[dict]) -> tuple[float, int]:
    """Share of strictly preferred pairs within each list that r_φ's sequence scores
    (``guidance_scores``) order the same way (a tie in score counts half), and the number
    of such pairs. Pairs tied in preference are skipped."""
    right, total = 0.0, 0
    for row in rows:
        pref, seq = row["scores"], row["guidance_scores"]
        for a, b in combinations(range(len(pref)), 2):
            if pref[a] == pref[b]:
                continue
            hi, lo = (a, b) if pref[a] > pref[b] else (b, a)
            total += 1
            right += 1.0 if seq[hi] > seq[lo] else 0.5 if seq[hi] == seq[lo] else 0.0
    return (right / total if total else float("nan")), total
