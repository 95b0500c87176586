"""Token rewards for other engines: a tokenalign reward source built from a spec, run on
rows of token ids, and placed on a ``[B, T]`` grid.

Engines hand us prompts and responses as token ids; tokenalign's reward sources take
:class:`~tokenalign.rollout.generate.Sample` objects. This module turns one into the
other and reuses tokenalign's own sources (``blame``, ``token_model``, ``scorer`` or a
``package.module:attribute`` builder) and :func:`~tokenalign.policy.rewards.place_rewards`,
so verl and TRL see exactly the rewards ``tokenalign train`` would train on.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import torch

from tokenalign.policy.rewards import RewardSource, make_reward_source, place_rewards
from tokenalign.rollout.generate import Sample, finish_row

log = logging.getLogger(__name__)

__all__ = ["build_reward_source", "samples_from_ids", "dense_rewards"]


def build_reward_source(
    source: Any = "blame",
    *,
    tokenizer: Any,
    scorer: Any = None,
    model: str = "",
    task: str = "",
    scale: float = 1.0,
    normalize: str = "none",
    aggregate: str = "sum",
    base_model: str = "",
) -> RewardSource:
    """A tokenalign reward source for a policy with ``tokenizer``.

    ``source`` is a reward source object (used as it is) or a name as in a config's
    ``reward.source``: ``blame`` (a scorer's blamed spans on their tokens, as ``tokenalign
    train`` places them), ``token_model`` or ``guidance`` (a token reward model folder:
    one trained by ``tokenalign reward``, or the r_φ a PG loop learned), ``scorer``
    (sequence score on the last token) or ``package.module:attribute``. ``scorer`` names
    the scorer (a registered name, ``module:attr``, a reward-model folder or an object;
    default: the task's); ``task`` supplies the scored text (e.g. pep8 scores complete lines).
    """
    if callable(source) and not isinstance(source, str):
        return source
    from tokenalign.policy.config import RewardSettings
    from tokenalign.rewards.model_scorers import load_scorer

    text_fn, task_scorer = None, None
    if task:
        from tokenalign.tasks import get_task

        t = get_task(task)
        text_fn, task_scorer = t.text_fn, t.scorer
    name = "token_model" if source == "guidance" else source  # learned guidance is a token reward model folder
    settings = RewardSettings(source=name, token_model=str(model), scale=scale, normalize=normalize,
                              aggregate=aggregate, placement="token")
    the_scorer = load_scorer(scorer) if scorer not in (None, "") else task_scorer
    base = base_model or getattr(tokenizer, "name_or_path", "") or ""
    log.info("tokenalign reward source %s (scorer %s, model %s)", name, scorer or task or "-", model or "-")
    return make_reward_source(settings, the_scorer, text_fn, tokenizer, base)


def samples_from_ids(
    tokenizer: Any, prompt_ids: Sequence[Sequence[int]], response_ids: Sequence[Sequence[int]],
    prompts: Sequence[str] | None = None, stop_strings: Sequence[str] = (),
) -> list[Sample]:
    """Samples of unpadded token rows: the response ids are what the policy generated
    (a trailing EOS ends the sample and is trained on, as in tokenalign's own rollouts).
    ``prompts`` (texts) default to the decoded prompt ids. With ``stop_strings``, a row is
    cut as tokenalign's sampler cuts it (:func:`~tokenalign.rollout.generate.finish_row`):
    the completion text ends before the first stop string, which ends the sample."""
    eos = tokenizer.eos_token_id
    out = []
    for i, (p, r) in enumerate(zip(prompt_ids, response_ids)):
        p, r = [int(x) for x in p], [int(x) for x in r]
        prompt = prompts[i] if prompts is not None else tokenizer.decode(p, skip_special_tokens=True)
        if stop_strings:
            out.append(finish_row(tokenizer, prompt, p, r, stop_strings, eos, tokenizer.pad_token_id))
            continue
        finished = bool(r) and eos is not None and r[-1] == eos
        body = r[:-1] if finished else r
        out.append(Sample(prompt=prompt, completion=tokenizer.decode(body), completion_ids=body, finished=finished,
                          generated_ids=r, prompt_ids=p))
    return out


def dense_rewards(source: RewardSource, samples: Sequence[Sample], width: int,
                  device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """(sequence scores ``[B]``, token rewards ``[B, width]`` on right-padded responses).

    Per-token rewards land on their tokens (``placement: token``); a source with sequence
    scores only puts each score on its sample's last token (``placement: sequence``).
    """
    out = source(samples)
    lengths = torch.tensor([len(s.generated_ids) for s in samples], dtype=torch.long)
    if len(samples) and int(lengths.max()) > width:
        raise ValueError(f"a response has {int(lengths.max())} tokens, more than the {width} columns")
    mask = torch.arange(width).unsqueeze(0) < lengths.unsqueeze(1)
    scores = torch.tensor(out.scores, dtype=torch.float32)
    if out.token_rewards is None:
        placed = place_rewards("sequence", mask, scores=scores)
    else:
        grid = torch.zeros(len(samples), width, dtype=torch.float32)
        for i, row in enumerate(out.token_rewards):
            grid[i, : len(row)] = torch.tensor(row, dtype=torch.float32)
        placed = place_rewards("token", mask, token_rewards=grid)
    return scores.to(device), placed.to(device)
