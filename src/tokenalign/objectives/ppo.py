"""PPO with a value model: clipped surrogate, clipped value loss, GAE over token rewards.

Fine-grained PPO (Xu et al., ACL 2024: dense rewards on tokens or segments) and
sequence-level ("holistic") PPO are this one objective with a different
``reward.placement``. Defaults are the FineGrainedRLHF reference settings.
"""

from __future__ import annotations

import dataclasses

import torch

from tokenalign.errors import ConfigError
from tokenalign.objectives.advantages import gae, whiten
from tokenalign.objectives.base import Chunk, Objective, register_objective, token_kl
from tokenalign.objectives.losses import ppo_policy_loss, ppo_value_loss
from tokenalign.rollout.batch import Rollout

__all__ = ["PPOSettings", "PPO"]


@dataclasses.dataclass
class PPOSettings:
    """PPO's own settings (config section ``ppo``); defaults from the FineGrainedRLHF code."""

    epochs: int = 4  # passes over the rollout per iteration
    minibatch_size: int = 16  # rows per optimizer step
    clip: float = 0.2  # ε of the clipped surrogate ratio
    value_clip: float = 0.2  # clip of the value prediction around the rollout's values
    gamma: float = 1.0  # discount
    lam: float = 0.95  # GAE λ
    value_coef: float = 1.0  # weight of the value loss
    value_lr: float = 0.0  # learning rate of the value model (0: the policy's lr)
    # With lora.enabled: the value model's backbone gets LoRA adapters of the same settings
    # (lora.r, alpha, target_modules, layers) and only they and the value head train, as in
    # the policy (most of PPO's time is the epochs' forward and backward passes through both
    # models; with lora.layers they stop below the adapted blocks). false: the whole value
    # model trains (FineGrainedRLHF's setting). No effect without lora.enabled; a resumed run
    # keeps the value model its checkpoint holds.
    value_lora: bool = True
    whiten_rewards: bool = True  # whiten the token rewards after the KL penalty (no mean shift)
    whiten_advantages: bool = True

    def validate(self) -> None:
        if self.minibatch_size < 1 or self.epochs < 1:
            raise ConfigError("ppo.minibatch_size and ppo.epochs must be >= 1")


@register_objective("ppo")
class PPO(Objective):
    name = "ppo"
    section = "ppo"
    Settings = PPOSettings
    needs_value_model = True

    def value_lr(self) -> float:
        return self.settings.value_lr or self.cfg.lr

    def signal(self, ro: Rollout, iteration: int) -> dict[str, torch.Tensor]:
        cfg, s, mask = self.cfg, self.settings, ro.batch.response_mask
        rewards = ro.rewards - cfg.kl_coef * token_kl(ro, cfg.kl_estimator)
        if s.whiten_rewards:
            rewards = whiten(rewards, mask, shift_mean=False)
        adv, ret = gae(rewards, ro.values, mask, s.gamma, s.lam)
        if s.whiten_advantages:
            adv = whiten(adv, mask)
        return {"advantages": adv, "returns": ret}

    def update_steps(self, trainer, ro: Rollout) -> list[list[torch.Tensor]]:
        """``epochs`` passes over shuffled minibatches, one optimizer step each."""
        g = torch.Generator().manual_seed(self.cfg.seed * 7919 + trainer.iteration)
        n, mb = len(ro.samples), self.settings.minibatch_size
        steps = []
        for _ in range(self.settings.epochs):
            order = torch.randperm(n, generator=g)
            steps += [[order[i : i + mb]] for i in range(0, n, mb)]
        return steps

    def loss(self, chunk: Chunk, ro: Rollout, signal: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        s, mask = self.settings, chunk.mask
        values = chunk.value_model(chunk.batch)
        ploss, stats = ppo_policy_loss(chunk.logprobs, chunk.cut(ro.logprobs), chunk.cut(signal["advantages"]), mask, s.clip)
        vloss = ppo_value_loss(values.float(), chunk.cut(ro.values), chunk.cut(signal["returns"]), mask, s.value_clip)
        loss = ploss + s.value_coef * vloss + self.entropy_term(chunk)
        return loss, {**stats, "policy_loss": ploss.item(), "value_loss": vloss.item()}
