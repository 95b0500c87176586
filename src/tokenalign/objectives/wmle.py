"""Guidance-weighted MLE on a supervised dataset (Yang et al., NeurIPS 2023): each token of a
reference response weighted by its (normalised) reward from a token reward model."""

from __future__ import annotations

import dataclasses
from typing import Literal

import torch

from tokenalign.errors import ConfigError
from tokenalign.objectives.base import Chunk, Objective, register_objective
from tokenalign.objectives.losses import guidance_weights, weighted_mle_loss
from tokenalign.rollout.batch import Rollout
from tokenalign.rollout.generate import Sample, encode_prompt

__all__ = ["WMLESettings", "WeightedMLE"]


@dataclasses.dataclass
class WMLESettings:
    """Guidance-weighted MLE's own settings (config section ``wmle``)."""

    data: str = ""  # a `supervised` dataset (prompt, completion): the responses trained on
    exp: bool = False  # weights from exp(r) instead of r before normalising
    reward_to_go: bool = False  # weights from Σ_{t'>=t} r_t' instead of r_t
    # guidance: w_t = r_t / Σ r (the paper's); uniform: w_t = 1 / L, plain MLE on the same rows with
    # the same per-sequence normalisation, the baseline guidance weighting is measured against
    weights: Literal["guidance", "uniform"] = "guidance"


@register_objective("wmle")
class WeightedMLE(Objective):
    name = "wmle"
    section = "wmle"
    Settings = WMLESettings

    @classmethod
    def check_config(cls, cfg) -> None:
        if cfg.reward.normalize != "none":
            raise ConfigError("objective wmle normalises positive token rewards into weights: reward.normalize must be none")

    @classmethod
    def check_sources(cls, cfg) -> None:
        if not cfg.objective_settings.data:
            raise ConfigError("objective wmle trains on a supervised dataset: set wmle.data=FILE (prompt, completion)")
        if cfg.objective_settings.weights == "guidance" and cfg.reward.source not in ("token_model", "guidance"):
            raise ConfigError("objective wmle weights tokens by a token reward model: reward.source=token_model")

    @classmethod
    def training_data(cls, cfg, task, tokenizer, policy, conditioning=None) -> list:
        from tokenalign.data import load_records

        return [(r.prompt, r.completion) for r in load_records(cfg.objective_settings.data, "supervised").records]

    def batch(self, trainer, iteration: int) -> Rollout:
        """This iteration's (prompt, response) rows as samples, in a seeded order per pass."""
        rows = trainer.iteration_rows(trainer.data, iteration)
        tok, limit = trainer.tokenizer, self.cfg.sampling.max_new_tokens
        samples = []
        for prompt, response in rows:
            ids = tok(response, add_special_tokens=False)["input_ids"][:limit]
            samples.append(Sample(prompt, tok.decode(ids), ids, True, ids, encode_prompt(tok, prompt)))
        return trainer.make_rollout(samples)

    def signal(self, ro: Rollout, iteration: int) -> dict[str, torch.Tensor]:
        s = self.settings
        mask = ro.batch.response_mask
        if s.weights == "uniform":
            return {"advantages": mask / mask.sum(dim=1, keepdim=True).clamp(min=1)}
        return {"advantages": guidance_weights(ro.token_rewards, mask, use_exp=s.exp,
                                               use_reward_to_go=s.reward_to_go)}

    def loss(self, chunk: Chunk, ro: Rollout, signal: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        return chunk.row_share * weighted_mle_loss(chunk.logprobs, chunk.cut(signal["advantages"]), chunk.mask), {}
