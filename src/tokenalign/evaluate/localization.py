"""How well a token reward points at the tokens really at fault.

Localization AUC: the probability that a blamed token (gold blame, e.g. a token inside a
pycodestyle violation) gets a *lower* reward than an unblamed token of the pool, ties
counted half — the area under the ROC curve of ``-reward`` as a detector of blame.
0.5 is chance, 1.0 perfect.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["roc_auc", "localization_auc"]


def roc_auc(scores: Sequence[float] | np.ndarray, labels: Sequence[int] | np.ndarray) -> float:
    """ROC AUC of ``scores`` for binary ``labels`` (Mann-Whitney U with average ranks).

    Returns NaN when one class is absent (the AUC is undefined, not 0.5).
    """
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(labels).astype(bool)
    if s.shape != y.shape:
        raise ValueError(f"scores {s.shape} and labels {y.shape} differ in shape")
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(s, kind="mergesort")
    sorted_s = s[order]
    ranks = np.empty_like(s)
    # Average ranks over ties (1-based).
    _, first, counts = np.unique(sorted_s, return_index=True, return_counts=True)
    avg = first + (counts + 1) / 2.0
    ranks[order] = np.repeat(avg, counts)
    u = ranks[y].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


def localization_auc(
    token_rewards: Sequence[Sequence[float]],
    token_blame: Sequence[Sequence[float]],
) -> float:
    """Pooled AUC of ``-reward`` against gold blame (> 0.5 means blamed) over all tokens."""
    if len(token_rewards) != len(token_blame):
        raise ValueError("one blame list per reward list is needed")
    rewards, blame = [], []
    for r, b in zip(token_rewards, token_blame):
        if len(r) != len(b):
            raise ValueError(f"a sample has {len(r)} token rewards but {len(b)} blame values")
        rewards.extend(r)
        blame.extend(b)
    return roc_auc(-np.asarray(rewards, dtype=np.float64), np.asarray(blame) > 0.5)
