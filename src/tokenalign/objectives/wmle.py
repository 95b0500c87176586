"""Guidance-weighted MLE on a supervised dataset (Yang et al., NeurIPS 2023): each token of a
reference response weighted by its (normalised) reward from a token reward model."""

from __future__ import annotations

import dataclasses
from typing import Literal

import torch

from tokenalign.errors import ConfigError
from tokenalign.objectives.base import Chunk, Objective, register_objective
from tokenalign.objectives.losses import guidance_weights, rewards_with_endings, weighted_mle_loss
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
    reports_kl = False  # the batch is the dataset's responses, not the policy's samples

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
        """This iteration's (prompt, response) rows as samples, in a seeded order per pass. A
        response that fits in ``sampling.max_new_tokens`` ends with the tokenizer's EOS, as a
        finished sample does, so the model learns where a response stops; a longer one is cut
        there, unfinished."""
        rows = trainer.iteration_rows(trainer.data, iteration)
        tok, limit = trainer.tokenizer, self.cfg.sampling.max_new_tokens
        eos = tok.eos_token_id
        samples = []
        for prompt, response in rows:
            ids = tok(response, add_special_tokens=False)["input_ids"]
            finished = len(ids) < limit
            ids = ids[:limit]
            ending = [eos] if finished and eos is not None else []
            samples.append(Sample(prompt, tok.decode(ids), ids, finished, ids + ending, encode_prompt(tok, prompt)))
        return trainer.make_rollout(samples)

    def signal(self, ro: Rollout, iteration: int) -> dict[str, torch.Tensor]:
        s = self.settings
        mask = ro.batch.response_mask
        if s.weights == "uniform":
            return {"advantages": mask / mask.sum(dim=1, keepdim=True).clamp(min=1)}
        ends = torch.tensor([len(x.completion_ids) if len(x.generated_ids) > len(x.completion_ids) else -1 for x in ro.samples],
                            device=mask.device)
        rewards = rewards_with_endings(ro.token_rewards, mask, ends)
        return {"advantages": guidance_weights(rewards, mask, use_exp=s.exp, use_reward_to_go=s.reward_to_go)}

    def loss(self, chunk: Chunk, ro: Rollout, signal: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        return chunk.row_share * weighted_mle_loss(chunk.logprobs, chunk.cut(signal["advantages"]), chunk.mask), {}
