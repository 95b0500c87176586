"""TRL's GRPOTrainer with tokenalign's stop strings, reward sources and per-token advantages.

:class:`StopStringGRPOTrainer` ends each completion at the first of a task's stop strings,
as tokenalign's sampler does, so TRL trains on the tokens it is scored on;
:func:`sequence_reward_func` makes any tokenalign reward source (a scorer, a reward model
folder) a TRL reward function that scores exactly the text tokenalign would score.

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
from collections.abc import Sequence
from typing import Any

import torch
from trl import GRPOTrainer, RLOOTrainer

from tokenalign.integrations.sources import build_reward_source, dense_rewards, samples_from_ids
from tokenalign.objectives.advantages import reward_to_go, rloo_baseline, whiten
from tokenalign.rollout.generate import StopOnStrings, finish_row

log = logging.getLogger(__name__)

__all__ = ["StopStrings", "StopStringGRPOTrainer", "StopStringRLOOTrainer", "TokenGRPOTrainer", "cut_at_stop", "sequence_reward_func", "token_advantages", "group_baseline"]


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


def cut_at_stop(tokenizer: Any, completion_ids: Sequence[Sequence[int]], stop_strings: Sequence[str]) -> list[list[int]]:
    """Each row of generated ids (unpadded; a trailing EOS kept) as tokenalign trains on it:
    up to the token that completed the first stop string in its text (the stop text is
    trained on, so the choice to stop is learned, and scored without), else unchanged."""
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    return [finish_row(tokenizer, "", [], [int(x) for x in ids], stop_strings, eos, pad).generated_ids
            for ids in completion_ids]


class StopStrings:
    """Mixin of a TRL trainer (GRPO, RLOO) whose completions end at the first of
    ``stop_strings``, as tokenalign's sampler ends them (transformers generation; not with
    ``use_vllm``).

    TRL's ``generate`` call takes no stopping criteria, and transformers' ``stop_strings``
    need the tokenizer passed to ``generate``, which TRL does not do: without this, a row runs
    to ``max_completion_length`` and is trained on text after its end. Here a row stops being
    sampled once a stop string appears in its *generated* text (tokenalign's criterion,
    :class:`~tokenalign.rollout.generate.StopOnStrings`: never matched across the prompt),
    and its completion is cut as :func:`cut_at_stop` says. The batch goes on until every row
    has stopped, as transformers' ``generate`` does.
    """

    def __init__(self, *args: Any, stop_strings: Sequence[str] = (), **kwargs: Any) -> None:
        self.stop_strings = tuple(stop_strings)
        super().__init__(*args, **kwargs)
        if self.stop_strings and self.use_vllm:
            raise ValueError("stop_strings: transformers generation only (with vLLM, pass generation_kwargs={'stop': ...})")

    @property
    def _policy_tokenizer(self) -> Any:
        return getattr(self.processing_class, "tokenizer", self.processing_class)

    def _generate_single_turn(self, prompt_ids: Any, *args: Any, **kwargs: Any) -> Any:
        """TRL's sampling with tokenalign's stopping criterion on the model's ``generate`` for
        this call, then each row cut at its first stop string (GRPO returns the ids and
        log-probs, RLOO the ids alone)."""
        if not self.stop_strings:
            return super()._generate_single_turn(prompt_ids, *args, **kwargs)
        from transformers import StoppingCriteriaList

        model, tok, stops = self.accelerator.unwrap_model(self.model), self._policy_tokenizer, self.stop_strings
        own = model.__dict__.get("generate")  # an instance attribute to put back (None: the class's method)
        generate = model.generate

        def stopping_generate(*a: Any, **kw: Any) -> Any:
            criterion = StopOnStrings(tok, stops, kw["input_ids"].shape[1])  # TRL left-pads: generation starts here
            kw["stopping_criteria"] = StoppingCriteriaList([*(kw.get("stopping_criteria") or []), criterion])
            return generate(*a, **kw)

        model.generate = stopping_generate
        try:
            out = super()._generate_single_turn(prompt_ids, *args, **kwargs)
        finally:
            if own is None:
                del model.generate
            else:
                model.generate = own
        if not isinstance(out, tuple):
            return cut_at_stop(tok, out, stops)
        completion_ids, logprobs = out
        cut = cut_at_stop(tok, completion_ids, stops)
        if logprobs is not None:
            logprobs = [lp[: len(ids)] for lp, ids in zip(logprobs, cut)]
        return cut, logprobs


class StopStringGRPOTrainer(StopStrings, GRPOTrainer):
    """TRL's GRPOTrainer with ``stop_strings`` (:class:`StopStrings`)."""


class StopStringRLOOTrainer(StopStrings, RLOOTrainer):
    """TRL's RLOOTrainer with ``stop_strings`` (:class:`StopStrings`)."""


def sequence_reward_func(source: Any = "scorer", *, tokenizer: Any, stop_strings: Sequence[str] = (),
                         **spec: Any) -> Any:
    """A TRL reward function ``fn(prompts, completions, completion_ids, **kwargs) -> rewards``:
    the sequence scores of a tokenalign reward source (``scorer``: the task scorer's gold
    score; ``token_model`` with ``model`` a reward model folder and ``aggregate`` ``last``: a
    sequence reward model; ``spec`` as in :func:`build_reward_source`). Each completion's
    ids are cut at ``stop_strings`` and its text built as in tokenalign's own rollouts
    (stop text left out, the task's ``text_fn``), so both engines score the same text."""
    built: list = []

    def reward(prompts: list, completions: list, completion_ids: list[list[int]], **kwargs: Any) -> list[float]:
        if not built:  # built on first use: in the process that trains
            built.append(build_reward_source(source, tokenizer=tokenizer, **spec))
        return built[0](samples_from_ids(tokenizer, [[] for _ in prompts], completion_ids, prompts=list(prompts),
                                         stop_strings=stop_strings)).scores

    reward.__name__ = str(source) if isinstance(source, str) else type(source).__name__
    return reward


class TokenGRPOTrainer(StopStringGRPOTrainer):
    """GRPO with tokenalign's dense token rewards and per-token advantages.

    ``token_rewards`` is a reward source object or a ``reward.source`` name (``blame``,
    ``token_model``, ``guidance``, ``scorer`` or ``module:attr``); ``scorer``, ``reward_model`` (a folder),
    ``task``, ``scale`` and ``normalize`` configure it. ``gamma`` discounts the
    reward-to-go; ``group_baseline`` subtracts the leave-one-out mean total reward of the
    prompt's other completions; ``whiten_advantages`` whitens over the batch's tokens.
    Everything else goes to :class:`StopStringGRPOTrainer` unchanged (``stop_strings``;
    not ``reward_funcs``: the token reward source is the reward, logged by TRL as
    ``rewards/tokenalign``).
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

    def tokenalign(self, prompts: list, completions: list, completion_ids: list[list[int]], **kwargs: Any) -> list[float]:
        """TRL reward function: each completion's total token reward; keeps the per-token
        rewards of this process's completions for :meth:`_generate_and_score_completions`."""
        tok = self._policy_tokenizer
        if self._source is None:
            self._source = build_reward_source(tokenizer=tok, **self._source_spec)
        texts = [tok.apply_chat_template(p, tokenize=False, add_generation_prompt=True) if isinstance(p, list) else p
                 for p in prompts]
        samples = samples_from_ids(tok, [[] for _ in prompts], completion_ids, prompts=texts, stop_strings=self.stop_strings)
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
