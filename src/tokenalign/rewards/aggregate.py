"""Sequence scores from token rewards: e_phi(y) = f({r_t}) (sum, avg, softmax, softmin;
Yang et al., NeurIPS 2023).

Token rewards come as a tensor ``rewards[N, K, T]`` — N lists of K samples of the same
prompt, T response positions — with a boolean ``mask[N, K, T]`` marking real response
tokens. ``L_k`` is the number of response tokens of sample k and ``Lbar`` the mean of L
over the valid samples of its list:

- ``sum``:     sum_t r_t
- ``avg``:     Lbar * (1 / L_k) * sum_t r_t                (default for variable lengths)
- ``softmax``: Lbar * beta * log sum_t exp(r_t / beta)      (pads are -inf)
- ``softmin``: Lbar * (-beta) * log sum_t exp(-r_t / beta)  (pads are +inf)

Multiplying by ``Lbar`` keeps avg/softmax/softmin on the scale of a sum over a typical
sample, so the same learning rate works for every aggregator.
"""

from __future__ import annotations

from typing import Literal

import torch

Aggregator = Literal["sum", "avg", "softmax", "softmin"]
AGGREGATORS: tuple[str, ...] = ("sum", "avg", "softmax", "softmin")

__all__ = ["Aggregator", "AGGREGATORS", "aggregate"]


def aggregate(
    rewards: torch.Tensor,
    mask: torch.Tensor,
    how: Aggregator = "avg",
    beta: float = 2.0,
    sample_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Aggregate token rewards ``[N, K, T]`` into sequence scores ``[N, K]``.

    ``sample_mask[N, K]`` marks which of the K slots hold a real sample (lists may be
    shorter than K); invalid slots get score 0 and do not count towards ``Lbar``. A valid
    sample with no response token is an error: its score would be undefined.
    """
    if rewards.shape != mask.shape or rewards.dim() != 3:
        raise ValueError(f"rewards and mask must both be [N, K, T], got {tuple(rewards.shape)} and {tuple(mask.shape)}")
    if how not in AGGREGATORS:
        raise ValueError(f"unknown aggregator {how!r}; choose from {', '.join(AGGREGATORS)}")
    mask = mask.bool()
    if sample_mask is None:
        sample_mask = torch.ones(rewards.shape[:2], dtype=torch.bool, device=rewards.device)
    sample_mask = sample_mask.bool()
    mask = mask & sample_mask.unsqueeze(-1)
    lengths = mask.sum(-1).to(rewards.dtype)  # L_k, [N, K]
    if bool((sample_mask & (lengths == 0)).any()):
        raise ValueError("a sample has no response tokens; its sequence score is undefined")
    if how == "sum":
        return (rewards * mask).sum(-1)
    n_valid = sample_mask.sum(-1, keepdim=True).clamp(min=1).to(rewards.dtype)
    lbar = (lengths * sample_mask).sum(-1, keepdim=True) / n_valid  # [N, 1]
    safe_len = lengths.clamp(min=1)
    if how == "avg":
        score = (rewards * mask).sum(-1) / safe_len
    elif how == "softmax":
        score = beta * torch.logsumexp((rewards / beta).masked_fill(~mask, float("-inf")), dim=-1)
    else:  # softmin
        score = -beta * torch.logsumexp((-rewards / beta).masked_fill(~mask, float("-inf")), dim=-1)
    score = lbar * score
    return score.masked_fill(~sample_mask, 0.0)
