"""RLOO: sequence-level REINFORCE with the leave-one-out baseline over the K samples of a
prompt (Ahmadian et al., 2024), on the sequence score minus the summed KL penalty."""

from __future__ import annotations

import torch

from tokenalign.errors import ConfigError
from tokenalign.objectives.advantages import rloo_baseline
from tokenalign.objectives.base import Chunk, Objective, register_objective, token_kl
from tokenalign.objectives.losses import sequence_pg_loss
from tokenalign.rollout.batch import Rollout

__all__ = ["RLOO"]


@register_objective("rloo")
class RLOO(Objective):
    name = "rloo"

    @classmethod
    def check_config(cls, cfg) -> None:
        if cfg.samples_per_prompt < 2:
            raise ConfigError("objective rloo needs samples_per_prompt >= 2 (the leave-one-out baseline)")

    def signal(self, ro: Rollout, iteration: int) -> dict[str, torch.Tensor]:
        seq = ro.scores - self.cfg.kl_coef * token_kl(ro, self.cfg.kl_estimator).sum(dim=1)
        return {"advantages": rloo_baseline(seq, self.cfg.samples_per_prompt)}

    def loss(self, chunk: Chunk, ro: Rollout, signal: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        pg = sequence_pg_loss(chunk.logprobs, chunk.cut(signal["advantages"]), chunk.mask)
        return chunk.row_share * pg + chunk.token_share * self.entropy_term(chunk), {}
