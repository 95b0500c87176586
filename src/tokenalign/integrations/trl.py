"""TRL's GRPOTrainer trained on tokenalign's per-token advantages instead of one scalar per completion.

:class:`TokenGRPOTrainer` takes a tokenalign token reward source (a scorer's blamed spans,
a token reward model folder, learned PG guidance; see
:func:`tokenalign.integrations.sources.build_reward_source`) in place of ``reward_funcs``.
TRL samples, scores and computes everything else as usual; only the advantages change:
each token's advantage is the reward-to-go of the dense token rewards
(:func:`tokenalign.objectives.advantages.reward_to_go`), optionally minus a
leave-one-out group baseline (the mean total reward of the prompt's other completions,
:func:`~tokenalign.objectives.advantages.rloo_baseline`) and whitened. TRL's GRPO loss
accepts ``(batch, tokens)`` advantages as they are.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from trl import GRPOTrainer

from tokenalign.integrations.sources import build_reward_source, dense_rewards, samples_from_ids
from tokenalign.objectives.advantages import reward_to_go, rloo_baseline, whiten

log = logging.getLogger(__name__)

__all__ = ["TokenGRPOTrainer", "token_advantages", "group_baseline"]


def token_advantages(rewards: torch.Tensor, mask: torch.Tensor, baseline: torch.Tensor | None = None,
                     gamma: float = 1.0, whiten_advantages: bool = False) -> torch.Tensor:
    """``[B, T]`` advantages of dense token rewards: reward-to-go, minus each sample's
    ``baseline`` (``[B]``) if given, whitened over real tokens if asked."""
    m = mask.bool()
    adv = reward_to_go(rewards, m, gamma)
    if baseline is not None:
        adv = (adv - baseline.unsqueeze(1).to(adv)) * m
    return whiten(adv, m) if whiten_advantages else adv


def group_baseline(totals: torch.Tensor, group_size: int) -> torch.Tensor:
    """Each sample's leave-one-out baseline: the mean total reward of its prompt's other
    samples (``totals`` grouped by prompt, ``group_size`` >= 2)."""
    return totals - rloo_baseline(totals, group_size)


class TokenGRPOTrainer(GRPOTrainer):
    """GRPO with tokenalign's dense token rewards and per-token advantages.

    ``token_rewards`` is a reward source object or a ``reward.source`` name (``blame``,
    ``token_model``, ``guidance``, ``scorer`` or ``module:attr``); ``scorer``, ``reward_model`` (a folder),
    ``task``, ``scale`` and ``normalize`` configure it. ``gamma`` discounts the
    reward-to-go; ``group_baseline`` subtracts the leave-one-out mean total reward of the
    prompt's other completions; ``whiten_advantages`` whitens over the batch's tokens.
    Everything else goes to :class:`trl.GRPOTrainer` unchanged (not ``reward_funcs``:
    the token reward source is the reward, logged by TRL as ``rewards/tokenalign``).
    """

    def __init__(self, model: Any, token_rewards: Any = "blame", *, scorer: Any = None, reward_model: str = "",
                 task: str = "", scale: float = 1.0, normalize: str = "none", gamma: float = 1.0,
                 group_baseline: bool = True, whiten_advantages: bool = False, **kwargs: Any) -> None:
        if "reward_funcs" in kwargs:
            raise TypeError("TokenGRPOTrainer takes token_rewards instead of reward_funcs")
        self._source_spec = dict(source=token_rewards, scorer=scorer, model=reward_model, task=task, scale=scale,
                                 normalize=normalize)
        self._source = None
        self.token_gamma, self.group_baseline, self.whiten_advantages = gamma, group_baseline, whiten_advantages
        self._dense_rows: list[list[float]] = []
        super().__init__(model=model, reward_funcs=[self.tokenalign], **kwargs)

    @property
    def _policy_tokenizer(self) -> Any:
        return getattr(self.processing_class, "tokenizer", self.processing_class)

    def tokenalign(self, prompts: list, completions: list, completion_ids: list[list[int]], **kwargs: Any) -> list[float]:
        """TRL reward function: each completion's total token reward; keeps the per-token
        rewards of this process's completions for :meth:`_generate_and_score_completions`."""
        tok = self._policy_tokenizer
        if self._source is None:
            self._source = build_reward_source(tokenizer=tok, **self._source_spec)
        texts = [tok.apply_chat_template(p, tokenize=False, add_generation_prompt=True) if isinstance(p, list) else p
                 for p in prompts]
        samples = samples_from_ids(tok, [[] for _ in prompts], completion_ids, prompts=texts)
        width = max((len(ids) for ids in completion_ids), default=0)
        _, placed = dense_rewards(self._source, samples, max(width, 1))
        self._dense_rows = [placed[i, : len(ids)].tolist() for i, ids in enumerate(completion_ids)]
        return placed.sum(dim=1).tolist()

    def _generate_and_score_completions(self, inputs: list[dict[str, Any]]) -> dict[str, Any]:
        """TRL's batch, with ``advantages`` replaced by tokenalign's ``[B, T]`` token advantages."""
        out = super()._generate_and_score_completions(inputs)
        mask = out["completion_mask"]
        if len(self._dense_rows) != mask.shape[0]:
            raise RuntimeError(f"{len(self._dense_rows)} rows of token rewards for {mask.shape[0]} completions")
        rewards = torch.zeros(mask.shape, dtype=torch.float32, device=mask.device)
        for i, row in enumerate(self._dense_rows):
            rewards[i, : len(row)] = torch.tensor(row, dtype=torch.float32, device=mask.device)
        group = (self.num_generations if self.model.training else self.num_generations_eval) if self.group_baseline else 0
        baseline = None
        if group >= 2:
            # a prompt's group may span processes, as in TRL's own baseline: gather, keep this process's rows
            n = mask.shape[0]
            start = self.accelerator.process_index * n
            baseline = group_baseline(self.accelerator.gather(rewards.sum(dim=1)), group)[start : start + n]
        out["advantages"] = token_advantages(rewards, mask, baseline, self.token_gamma, self.whiten_advantages)
        self._dense_rows = []
        return out
