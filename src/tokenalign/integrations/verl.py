"""tokenalign's token rewards and advantage estimators inside verl (``pip install "tokenalign[verl]"``).

Three pieces, each registered where verl looks for it, so a verl run names them in its
Hydra config:

- :class:`TokenalignRewardManager` (``reward.reward_manager.name=tokenalign``): rewards
  from any tokenalign token reward source (a scorer's blamed spans placed as
  ``reward.source: blame`` places them, a token reward model folder, learned PG guidance)
  for verl's ``DataProto`` batches: ``token_level_scores(data)`` gives the dense
  ``(batch, response_tokens)`` tensor. It is registered in verl's reward-loop registry (what
  verl 0.9's trainer reads) and in its batch reward-manager registry
  (``verl.workers.reward_manager``, the ``__call__(data)`` interface).
- :class:`TokenalignAgentLoopManager` (``actor_rollout_ref.rollout.agent.agent_loop_manager_class``):
  verl 0.9's streaming reward loop carries one number per trajectory (on its last token);
  this manager replaces those ``rm_scores`` with the dense token rewards of each rollout
  batch, so they reach verl's ``token_level_scores``.
- Advantage estimators ``tokenalign_reinforce`` (token REINFORCE on reward-to-go) and
  ``tokenalign_gae`` (GAE that keeps per-token rewards, whitened as tokenalign's PPO does),
  registered with verl's ``register_adv_est`` and computed by tokenalign's own
  :mod:`tokenalign.objectives.advantages`.

Importing this module registers all of them; verl imports it in its own processes when a
config names ``pkg://tokenalign.integrations.verl`` (see ``examples/verl/``).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import torch
from verl import DataProto
from verl.experimental.reward_loop.reward_manager import register as register_reward_loop_manager
from verl.experimental.reward_loop.reward_manager.base import RewardManagerBase
from verl.trainer.ppo.core_algos import register_adv_est
from verl.workers.reward_manager import register as register_batch_reward_manager
from verl.workers.reward_manager.abstract import AbstractRewardManager

from tokenalign.integrations.sources import build_reward_source, dense_rewards, samples_from_ids
from tokenalign.objectives.advantages import gae, reward_to_go, whiten
from tokenalign.objectives.losses import masked_mean

log = logging.getLogger(__name__)

__all__ = ["TokenalignRewardManager", "TokenalignAgentLoopManager", "tokenalign_reinforce", "tokenalign_gae",
           "batch_samples"]

# what a config may set under reward.reward_kwargs (or pass as keyword arguments)
_SOURCE_KEYS = ("source", "scorer", "model", "task", "scale", "normalize", "aggregate", "base_model")


def batch_samples(data: DataProto, tokenizer: Any) -> list:
    """The tokenalign samples of a verl batch: ``prompts`` (left-padded) and ``responses``
    (right-padded), unpadded with the ``attention_mask``."""
    prompts, responses = data.batch["prompts"], data.batch["responses"]
    p_len = prompts.shape[1]
    mask = data.batch["attention_mask"].bool()
    prompt_rows = [prompts[i][mask[i, :p_len]].tolist() for i in range(len(data))]
    response_rows = [responses[i][mask[i, p_len:]].tolist() for i in range(len(data))]
    return samples_from_ids(tokenizer, prompt_rows, response_rows)


@register_batch_reward_manager("tokenalign")
@register_reward_loop_manager("tokenalign")
class TokenalignRewardManager(RewardManagerBase, AbstractRewardManager):
    """verl reward manager over a tokenalign token reward source.

    Settings come as keyword arguments or from the config's ``reward.reward_kwargs``:
    ``source`` (``blame``, ``token_model``, ``guidance``, ``scorer`` or ``module:attr``),
    ``scorer``, ``model`` (a token reward model folder), ``task``, ``scale``,
    ``normalize``, ``aggregate``; see :func:`tokenalign.integrations.sources.build_reward_source`.
    verl's ``compute_score`` is not used: the tokenalign source is the reward.
    """

    def __init__(self, config: Any = None, tokenizer: Any = None, compute_score: Any = None, **kwargs: Any) -> None:
        RewardManagerBase.__init__(self, config, tokenizer, compute_score)
        settings = {}
        reward_cfg = config.get("reward", {}) if config is not None else {}
        settings.update({k: v for k, v in dict(reward_cfg.get("reward_kwargs", None) or {}).items() if k in _SOURCE_KEYS})
        settings.update({k: v for k, v in kwargs.items() if k in _SOURCE_KEYS})
        source = settings.pop("source", "blame")
        self.source = build_reward_source(source, tokenizer=tokenizer, **settings)

    def token_level_scores(self, data: DataProto) -> torch.Tensor:
        """Dense rewards ``(batch, response_tokens)`` of a verl batch (0 on padding)."""
        width = data.batch["responses"].shape[1]
        _, placed = dense_rewards(self.source, batch_samples(data, self.tokenizer), width,
                                  data.batch["responses"].device)
        return placed

    def __call__(self, data: DataProto, return_dict: bool = False) -> torch.Tensor | dict[str, Any]:
        """verl's batch reward-manager interface: the dense ``token_level_scores``."""
        scores = self.token_level_scores(data)
        if not return_dict:
            return scores
        return {"reward_tensor": scores, "reward_extra_info": {"tokenalign_score": scores.sum(dim=1).tolist()}}

    async def run_single(self, data: DataProto) -> dict:
        """verl's reward-loop interface, one trajectory at a time: its total reward (the sum
        of its token rewards), which verl puts on the last token.
        :class:`TokenalignAgentLoopManager` replaces that with the dense rewards."""
        row = data[-1:]
        loop = asyncio.get_running_loop()  # the caller's loop (verl's worker, or asyncio.run)
        total = float(await loop.run_in_executor(None, lambda: self.token_level_scores(row).sum()))
        return {"reward_score": total, "reward_extra_info": {"tokenalign_score": total}}


def _setting(config: Any, key: str, default: Any) -> Any:
    if config is None:
        return default
    value = config.get(key, default) if hasattr(config, "get") else getattr(config, key, default)
    return default if value is None else value


@register_adv_est("tokenalign_reinforce")
def tokenalign_reinforce(token_level_rewards: torch.Tensor, response_mask: torch.Tensor, config: Any = None,
                         **kwargs: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """Token REINFORCE (tokenalign's ``reinforce`` with ``reward_to_go: true``): every
    token's advantage is its discounted reward-to-go over the dense token rewards.

    ``algorithm.gamma`` discounts; ``algorithm.tokenalign_baseline`` (``none``, ``mean``
    or ``whiten``, default ``whiten``) subtracts the batch mean or whitens, as
    ``reinforce.baseline``. Returns (advantages, returns), ``(batch, response_tokens)``.
    """
    mask = response_mask.bool()
    returns = reward_to_go(token_level_rewards, mask, float(_setting(config, "gamma", 1.0)))
    baseline = _setting(config, "tokenalign_baseline", "whiten")
    if baseline == "whiten":
        adv = whiten(returns, mask)
    elif baseline == "mean":
        adv = (returns - masked_mean(returns, mask)) * mask
    elif baseline == "none":
        adv = returns
    else:
        raise ValueError(f"algorithm.tokenalign_baseline must be none, mean or whiten, not {baseline!r}")
    return adv, returns


@register_adv_est("tokenalign_gae")
def tokenalign_gae(token_level_rewards: torch.Tensor, response_mask: torch.Tensor, values: torch.Tensor | None = None,
                   config: Any = None, **kwargs: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """Fine-grained GAE as tokenalign's ``ppo`` computes it: the dense token rewards are
    whitened without a mean shift, GAE keeps one reward per token, the advantages are
    whitened. ``algorithm.gamma`` and ``algorithm.lam`` as in verl.

    It needs the critic's ``values``. verl 0.9's ``compute_advantage`` passes values only
    to its built-in ``gae`` (which is already per-token on dense rewards, without the
    whitening); call this one where values are at hand.
    """
    if values is None:
        raise ValueError("tokenalign_gae needs the critic's values; verl's compute_advantage passes them only to "
                         "its built-in 'gae' (per-token GAE on the same dense rewards, without tokenalign's whitening)")
    mask = response_mask.bool()
    rewards = whiten(token_level_rewards, mask, shift_mean=False)
    adv, returns = gae(rewards, values, mask, float(_setting(config, "gamma", 1.0)), float(_setting(config, "lam", 0.95)))
    return whiten(adv, mask), returns


def _agent_loop_manager_class() -> type:
    """verl's AgentLoopManager, with the dense tokenalign rewards in each rollout batch."""
    from verl.experimental.agent_loop import AgentLoopManager
    from verl.utils import hf_tokenizer

    class TokenalignAgentLoopManager(AgentLoopManager):
        """Rollouts as verl's manager makes them, then ``rm_scores`` = the dense token
        rewards of :class:`TokenalignRewardManager` (built from ``reward.reward_kwargs``)."""

        def generate_sequences(self, prompts: DataProto) -> DataProto:
            output = super().generate_sequences(prompts)
            if not hasattr(self, "_tokenalign"):
                model = self.config.actor_rollout_ref.model
                tokenizer = hf_tokenizer(model.get("tokenizer_path") or model.path)
                self._tokenalign = TokenalignRewardManager(config=self.config, tokenizer=tokenizer)
            dense = self._tokenalign.token_level_scores(output)
            output.batch["rm_scores"] = dense.to(output.batch["responses"].device)
            return output

    TokenalignAgentLoopManager.__module__ = __name__
    return TokenalignAgentLoopManager


def __getattr__(name: str) -> Any:
    # built on first use: verl's agent loop imports its serving stack, which the reward
    # manager and the estimators do not need
    if name == "TokenalignAgentLoopManager":
        cls = _agent_loop_manager_class()
        globals()[name] = cls
        return cls
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
