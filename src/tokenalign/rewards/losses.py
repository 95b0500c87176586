"""Preference losses for learning token rewards: Plackett-Luce over ranked lists (Yang et
al., NeurIPS 2023) and token classification on edit labels (Xu et al., ACL 2024).

- :func:`preference_order`: best-first order of K samples from their preference scores,
  ties broken at random (shuffle, then a stable sort) — only the order is used.
- :func:`plackett_luce_loss`: listwise ListMLE loss
  ``L = -sum_k [ e_(k) - log sum_{i>=k} exp(e_(i)) ]``; K = 2 is Bradley-Terry.
- :func:`bradley_terry_loss`: ``-log sigmoid(e_chosen - e_rejected)``, the K = 2 case.
- :func:`token_label_loss`: binary cross-entropy on edit-diff token labels, ignoring -100.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

IGNORE_INDEX = -100

__all__ = [
    "IGNORE_INDEX",
    "preference_order",
    "plackett_luce_loss",
    "bradley_terry_loss",
    "token_label_loss",
]


def preference_order(
    preference: torch.Tensor,
    sample_mask: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Indices ``[N, K]`` that sort each list best first (higher preference is better).

    Ties are broken uniformly at random: the samples are shuffled, then stably sorted.
    Invalid slots (``sample_mask`` False) go last. NaN preferences are an error.
    """
    if torch.isnan(preference).any():
        raise ValueError("preference scores contain NaN; clean the data before ranking")
    n, k = preference.shape
    pref = preference.to(torch.float64)
    if sample_mask is not None:
        pref = pref.masked_fill(~sample_mask.bool(), float("-inf"))
    noise = torch.rand(n, k, generator=generator, device=preference.device if generator is None else generator.device)
    shuffle = noise.argsort(dim=-1).to(preference.device)
    shuffled = pref.gather(-1, shuffle)
    order_in_shuffled = torch.sort(shuffled, dim=-1, descending=True, stable=True).indices
    return shuffle.gather(-1, order_in_shuffled)


def plackett_luce_loss(
    scores: torch.Tensor,
    sample_mask: torch.Tensor | None = None,
    reduction: str = "mean",
) -> torch.Tensor:
    """Plackett-Luce negative log-likelihood of lists already ordered best first.

    ``scores[N, K]`` are the model's sequence scores e_(1..K) in preference order; invalid
    slots (``sample_mask`` False) must come last and are excluded. Returns the mean (or sum,
    or per-list ``none``) over lists of ``-sum_k [e_(k) - logsumexp_{i>=k} e_(i)]``.
    """
    if scores.dim() != 2:
        raise ValueError(f"scores must be [N, K], got {tuple(scores.shape)}")
    if sample_mask is None:
        sample_mask = torch.ones_like(scores, dtype=torch.bool)
    sample_mask = sample_mask.bool()
    masked = scores.masked_fill(~sample_mask, float("-inf"))
    # log sum_{i >= k} exp(e_i): a reversed cumulative logsumexp.
    tail_lse = torch.logcumsumexp(masked.flip(-1), dim=-1).flip(-1)
    terms = (scores - tail_lse).masked_fill(~sample_mask, 0.0)
    per_list = -terms.sum(-1)
    if reduction == "none":
        return per_list
    if reduction == "sum":
        return per_list.sum()
    return per_list.mean()


def bradley_terry_loss(chosen: torch.Tensor, rejected: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """``-log sigmoid(e_chosen - e_rejected)``: the K = 2 Plackett-Luce loss."""
    loss = -F.logsigmoid(chosen - rejected)
    return loss.mean() if reduction == "mean" else loss.sum() if reduction == "sum" else loss


def token_label_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean binary cross-entropy of token logits against labels in [0, 1]; -100 is ignored.

    Labels may be soft (a "neutral" 0.5 for unchanged tokens). Returns 0 (with a gradient
    path) when no token is labelled, so a batch of identical edits does not produce NaN.
    """
    keep = labels != IGNORE_INDEX
    if not bool(keep.any()):
        return logits.sum() * 0.0
    return F.binary_cross_entropy_with_logits(logits[keep].float(), labels[keep].float())
