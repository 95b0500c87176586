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
- ``softmax_mean`` / ``softmin_mean``: the same with log-*mean*-exp,
  Lbar * (+-beta) * log (1/L_k) sum_t exp(+-r_t / beta)
- ``last``:    r_{L_k}, the reward of the last response token only. A model learned with it
  is a sequence reward model (one score read from the final hidden state, as an
  ``...ForSequenceClassification`` head reads it): the equal-information baseline of a
  token reward learned from the same rankings.

Multiplying by ``Lbar`` keeps avg/softmax/softmin on the scale of a sum over a typical
sample, so the same learning rate works for every aggregator.

``softmax`` / ``softmin`` are the paper's code as written (``temp * logsumexp`` times the
mean trajectory length, Shentao-YANG/Preference_Grounded_Guidance, sum_task/reward_model.py).
They carry a length term: for constant rewards r they give Lbar * (r +- beta * log L_k), so
two samples of lengths 50 and 100 differ by Lbar * beta * log 2 with identical tokens, and a
ranking loss can learn length from it. ``softmax_mean`` / ``softmin_mean`` subtract
beta * log L_k (log-mean-exp): constant rewards give Lbar * r at every length, as ``avg``
does, and they still tend to the max / min for small beta.
"""

from __future__ import annotations

from typing import Literal

import torch

Aggregator = Literal["sum", "avg", "softmax", "softmin", "softmax_mean", "softmin_mean", "last"]
AGGREGATORS: tuple[str, ...] = ("sum", "avg", "softmax", "softmin", "softmax_mean", "softmin_mean", "last")

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
    if how == "last":
        at_last = mask & (mask.cumsum(-1) == lengths.unsqueeze(-1).long())
        return (rewards * at_last).sum(-1)
    n_valid = sample_mask.sum(-1, keepdim=True).clamp(min=1).to(rewards.dtype)
    lbar = (lengths * sample_mask).sum(-1, keepdim=True) / n_valid  # [N, 1]
    safe_len = lengths.clamp(min=1)
    if how == "avg":
        score = (rewards * mask).sum(-1) / safe_len
    else:
        sign = 1.0 if how.startswith("softmax") else -1.0
        score = sign * beta * torch.logsumexp((sign * rewards / beta).masked_fill(~mask, float("-inf")), dim=-1)
        if how.endswith("_mean"):  # log-mean-exp: no length term
            score = score - sign * beta * torch.log(safe_len)
    score = lbar * score
    return score.masked_fill(~sample_mask, 0.0)
