"""Reward models as scorers: a sequence reward model (any ``AutoModelForSequenceClassification``
with one output) or a tokenalign token reward model (a folder written by ``tokenalign
reward``), so rewarding, ranking and evaluating can all use a learned preference model.

Both read ``prompt + completion`` as the policy wrote them (the prompt's tail is kept
and the completion's end cut when they exceed the model's context) and report a
*reward* (higher is better; ``misalignment`` = -reward). A token reward model's
sequence reward is the aggregate its ranking loss was trained on (``sum`` or ``avg`` of
its token rewards); its token rewards are the blame-free dense signal of
``reward.source: token_model``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from tokenalign.errors import ConfigError, TokenalignError
from tokenalign.scorers.base import ScoreResult, Scorer, as_scorer, check_lengths

log = logging.getLogger(__name__)

__all__ = ["SequenceModelScorer", "TokenModelScorer", "reward_model_scorer", "load_scorer"]


class SequenceModelScorer:
    """A sequence reward model's scalar output for ``prompt + completion``, as the reward."""

    higher_is_better = True
    metric = "reward"

    def __init__(self, path: str | Path, batch_size: int = 16, max_length: int | None = None) -> None:
        from transformers import AutoModelForSequenceClassification

        from tokenalign.utils.models import load_tokenizer

        self.name = str(path)
        try:
            self.model = AutoModelForSequenceClassification.from_pretrained(str(path)).eval()
            self.tokenizer = load_tokenizer(str(path))
        except (OSError, ValueError) as err:
            raise TokenalignError(f"cannot load sequence reward model '{path}': {err}") from None
        if self.model.config.num_labels != 1:
            raise TokenalignError(f"sequence reward model '{path}' has {self.model.config.num_labels} outputs; "
                                  "a reward model has one (num_labels=1)")
        if self.model.config.pad_token_id is None:  # batches need it to find each row's last token
            self.model.config.pad_token_id = self.tokenizer.pad_token_id
        limit = getattr(self.model.config, "max_position_embeddings", None) or getattr(self.model.config, "n_positions", None)
        self.max_length = min(x for x in (max_length, limit) if x) if (max_length or limit) else None
        self.batch_size = batch_size

    @torch.no_grad()
    def rewards(self, completions: Sequence[str], prompts: Sequence[str] | None = None) -> list[float]:
        """The model's reward of each (prompt, completion), batched."""
        from tokenalign.rewards.batching import encode_for_reward

        prompts = check_lengths(completions, prompts)
        device = next(self.model.parameters()).device
        out: list[float] = []
        for start in range(0, len(completions), self.batch_size):
            batch = encode_for_reward(self.tokenizer, prompts[start : start + self.batch_size],
                                      completions[start : start + self.batch_size], max_length=self.max_length)
            logits = self.model(input_ids=batch.input_ids.to(device), attention_mask=batch.attention_mask.to(device)).logits
            out.extend(logits[:, 0].float().cpu().tolist())
        return out

    def score(self, completions: Sequence[str], prompts: Sequence[str] | None = None) -> list[ScoreResult]:
        return [ScoreResult(-r, n_chars=len(c)) for c, r in zip(completions, self.rewards(completions, prompts))]


class TokenModelScorer:
    """A tokenalign token reward model's sequence reward for ``prompt + completion``: the
    aggregate of its token rewards it was trained on, per sample (``sum``; ``avg``: their
    mean; ``softmax``/``softmin``: beta log-sum-exp), without the list-level length scale
    the ranking loss multiplies in, so samples of different prompts compare."""

    higher_is_better = True
    metric = "reward"

    def __init__(self, path: str | Path, batch_size: int = 16) -> None:
        from tokenalign.rewards.model import TokenRewardModel
        from tokenalign.utils.models import load_tokenizer

        self.name = str(path)
        self.model = TokenRewardModel.from_pretrained(path)
        self.tokenizer = load_tokenizer(str(path))
        self.batch_size = batch_size

    def score(self, completions: Sequence[str], prompts: Sequence[str] | None = None) -> list[ScoreResult]:
        from tokenalign.rewards.aggregate import aggregate
        from tokenalign.rewards.scoring import score_tokens

        prompts = check_lengths(completions, prompts)
        how, beta = self.model.sequence_aggregate
        out = []
        for c, tr in zip(completions, score_tokens(self.model, self.tokenizer, prompts, list(completions), self.batch_size)):
            values = torch.tensor([[tr.rewards]], dtype=torch.float64)  # [N=1, K=1, T]
            reward = float(aggregate(values, torch.ones_like(values, dtype=torch.bool), how, beta).flatten()[0]) if tr.rewards else 0.0
            if how != "sum" and tr.rewards:  # per sample, without the list's mean-length scale Lbar (= L for one sample)
                reward /= len(tr.rewards)
            out.append(ScoreResult(-reward, n_chars=len(c)))
        return out


def reward_model_scorer(path: str | Path) -> SequenceModelScorer | TokenModelScorer:
    """The scorer of a reward-model folder: a tokenalign token reward model (it holds
    ``tokenalign_reward.json``) or a sequence classifier with one output."""
    from tokenalign.rewards.model import CONFIG_NAME

    folder = Path(path).expanduser()
    if (folder / CONFIG_NAME).is_file():
        return TokenModelScorer(folder)
    config = folder / "config.json"
    if config.is_file():
        architectures = json.loads(config.read_text(encoding="utf-8")).get("architectures") or []
        if any(a.endswith("ForSequenceClassification") for a in architectures):
            return SequenceModelScorer(folder)
        raise TokenalignError(f"model folder '{path}' holds a {', '.join(architectures) or 'model'}: a scorer folder must "
                              "hold a sequence reward model (…ForSequenceClassification) or a tokenalign token reward model")
    raise TokenalignError(f"folder '{path}' holds no model (no config.json, no {CONFIG_NAME}): "
                          "a scorer folder must hold a sequence reward model or a tokenalign token reward model")


def load_scorer(spec: Any) -> Scorer | None:
    """Any preference source as a scorer: a reward-model folder (:func:`reward_model_scorer`),
    or what :func:`tokenalign.scorers.as_scorer` takes (a registered name,
    ``package.module:attribute``, a scorer object, a TRL reward function). None or ``""``
    (a config that names none): None."""
    from tokenalign.utils.models import looks_local

    if spec is None or spec == "":
        return None

    if isinstance(spec, (str, Path)):
        spec = str(spec)
        if Path(spec).expanduser().is_dir():
            return reward_model_scorer(spec)
        if looks_local(spec) and ":" not in spec:
            raise ConfigError(f"scorer folder '{spec}' does not exist")
    return as_scorer(spec)
