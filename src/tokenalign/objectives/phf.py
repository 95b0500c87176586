"""The PHF objectives' loss on one batch of the scored corpus (SPEC 3.4), by configuration.

MLE, filtering and conditional training share the plain cross-entropy (they differ in
their data: all documents, the documents kept by the filter, documents with control
tokens); unlikelihood, RWR and AWR weigh tokens by their segment's score.
"""

from __future__ import annotations

import torch

from tokenalign.policy.config import TrainConfig
from tokenalign.objectives.phf_math import aligned_tokens, awr_loss, mle_loss, rwr_loss, unlikelihood_loss

__all__ = ["phf_objective_loss"]


def phf_objective_loss(
    cfg: TrainConfig,
    logprobs: torch.Tensor,
    rewards: torch.Tensor,
    token_scores: torch.Tensor,
    mask: torch.Tensor,
    values: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Mean per-token loss of ``cfg.objective`` (``rewards`` = -``token_scores``)."""
    h, objective = cfg.phf, cfg.objective
    if objective in ("phf-mle", "phf-filter", "phf-cond"):
        return mle_loss(logprobs, mask), {}
    if objective == "phf-ul":
        aligned = aligned_tokens(token_scores, h.ul_threshold)
        share = float((aligned & mask).sum()) / max(int(mask.sum()), 1)
        return unlikelihood_loss(logprobs, aligned, mask, h.ul_alpha), {"aligned_tokens": share}
    if objective == "phf-rwr":
        return rwr_loss(logprobs, rewards, mask, h.rwr_beta, h.max_weight), {}
    if objective == "phf-awr":
        if values is None:
            raise ValueError("phf-awr needs the value model's values")
        loss, stats = awr_loss(logprobs, rewards, values, mask, h.awr_alpha, h.awr_beta, h.max_weight)
        return loss, {k: float(v) for k, v in stats.items()}
    raise ValueError(f"not a PHF objective: {objective!r}")
