"""Token-level REINFORCE with a max-entropy term: the policy objective of preference-grounded
token guidance (Yang et al., NeurIPS 2023: each token's log-prob weighted by its own reward,
plus α x entropy; their default α = 0.125)."""

from __future__ import annotations

import dataclasses
from typing import Literal

import torch

from tokenalign.objectives.advantages import reward_to_go, whiten
from tokenalign.objectives.base import Chunk, Objective, register_objective, token_kl
from tokenalign.objectives.losses import masked_mean, reinforce_loss
from tokenalign.rollout.batch import Rollout

__all__ = ["ReinforceSettings", "Reinforce"]


@dataclasses.dataclass
class ReinforceSettings:
    """Token REINFORCE's own settings (config section ``reinforce``)."""

    reward_to_go: bool = False  # weight token t by Σ_{t'>=t} r_t' instead of r_t
    # "mean" subtracts the batch's mean token signal, "whiten" also divides by its std
    # (the guidance paper uses none)
    baseline: Literal["none", "mean", "whiten"] = "none"


@register_objective("reinforce")
class Reinforce(Objective):
    name = "reinforce"
    section = "reinforce"
    Settings = ReinforceSettings

    def signal(self, ro: Rollout, iteration: int) -> dict[str, torch.Tensor]:
        cfg, s, mask = self.cfg, self.settings, ro.batch.response_mask
        rewards = (ro.rewards - cfg.kl_coef * token_kl(ro, cfg.kl_estimator)) * mask
        signal = reward_to_go(rewards, mask) if s.reward_to_go else rewards
        if s.baseline == "mean":
            signal = (signal - masked_mean(signal, mask)) * mask
        elif s.baseline == "whiten":
            signal = whiten(signal, mask)
        return {"advantages": signal}

    def loss(self, chunk: Chunk, ro: Rollout, signal: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        loss = reinforce_loss(chunk.logprobs, chunk.cut(signal["advantages"]), chunk.mask, chunk.neg_entropy,
                              self.cfg.entropy_coef)
        return chunk.token_share * loss, {}
