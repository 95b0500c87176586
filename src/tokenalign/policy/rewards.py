"""Reward sources for rollouts, and where their rewards are placed on the tokens.

A *reward source* turns sampled responses into a sequence score per sample (higher is
better) and, when it can, a reward per generated token:

- :class:`ScorerReward` wraps any sequence scorer (e.g. pycodestyle's misalignment; the
  reward is ``-scale * misalignment``);
- :class:`ConstraintReward` is the constraint b(y) of distribution matching as a reward:
  ``scale`` if the scorer's misalignment is 0 (pep8: compiles, no violation), else 0, so
  KL-regularised RL can be compared with CDPG / DPG on the same binary signal;
- :class:`BlameReward` spreads that score over the tokens the scorer blames (gold
  fine-grained credit: pycodestyle's violations, each on the token it points at);
- :class:`TokenModelReward` runs a trained :class:`~tokenalign.rewards.TokenRewardModel`
  (preference-grounded or edit-supervised) and maps its per-token rewards onto the
  policy's tokens through character spans, so the two tokenizers may differ;
- :class:`DPOTokenReward` gives each sampled token a DPO-trained model's log-ratio to its
  reference, β log π_dpo(y_t|s_t)/π_ref(y_t|s_t) (RTO, Zhong et al. 2024): the same
  tokenizer as the policy, one forward pass of each model per batch.

:func:`place_rewards` then puts them on the tokens: ``token`` (dense, every token its
own), ``segment`` (a line's or sentence's summed reward on its last token) or ``sequence``
(the sequence score on the last token: holistic PPO / REINFORCE).

``REWARD_SOURCES`` names the built-in sources (``scorer``, ``constraint``, ``blame``,
``token_model``, ``dpo``, and ``guidance``, the align loop's own r_φ) as
functions that build one from a run's settings; a config's ``reward.source`` takes one of
those names or ``package.module:attribute`` (a function with the same signature as
:func:`scorer_source`).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import re
from collections.abc import Callable, Sequence
from typing import Any, Literal, Protocol

import torch

from tokenalign.registry import Registry
from tokenalign.rollout.batch import build_token_batch, response_char_spans, token_logprobs
from tokenalign.rollout.generate import Sample

log = logging.getLogger(__name__)

__all__ = [
    "REWARD_SOURCES",
    "register_reward_source",
    "make_reward_source",
    "scorer_source",
    "RewardOutput",
    "RewardSource",
    "ScorerReward",
    "ConstraintReward",
    "BlameReward",
    "TokenModelReward",
    "DensePlusSequenceReward",
    "DPOTokenReward",
    "dpo_token_rewards",
    "spans_to_tokens",
    "segment_ends",
    "place_rewards",
]

Placement = Literal["token", "segment", "sequence"]


@dataclasses.dataclass
class RewardOutput:
    """Rewards of a list of samples. ``token_rewards[i]`` has one value per generated token
    of sample i (``Sample.generated_ids``), or is None when the source has none."""

    scores: list[float]
    token_rewards: list[list[float]] | None = None
    details: list[Any] = dataclasses.field(default_factory=list)  # e.g. the scorer's results


class RewardSource(Protocol):
    def __call__(self, samples: Sequence[Sample]) -> RewardOutput: ...


class ScorerReward:
    """Sequence reward ``-scale * misalignment`` from a scorer (lower misalignment is better).

    ``text_fn(completion, finished)`` picks what is scored (the pep8 task scores complete
    lines only). A NaN score is an error, never a silent zero.
    """

    def __init__(self, scorer, scale: float = 1.0, text_fn: Callable[[str, bool], str] | None = None) -> None:
        from tokenalign.scorers import accepts_completion_ids

        self.scorer, self.scale, self.text_fn = scorer, scale, text_fn
        self.pass_ids = accepts_completion_ids(scorer)  # a reward function gets the policy's tokens, as in TRL

    def __call__(self, samples: Sequence[Sample]) -> RewardOutput:
        texts = [self.text_fn(s.completion, s.finished) if self.text_fn else s.completion for s in samples]
        extra = {"completion_ids": [s.generated_ids for s in samples]} if self.pass_ids else {}
        results = self.scorer.score(texts, [s.prompt for s in samples], **extra)
        scores = [-self.scale * r.misalignment for r in results]
        bad = [i for i, x in enumerate(scores) if not math.isfinite(x)]
        if bad:
            raise ValueError(f"scorer returned a non-finite score for samples {bad[:5]}")
        return RewardOutput(scores, None, list(results))


class ConstraintReward:
    """The binary constraint b(y) as a sequence reward: ``scale`` when the scorer's
    misalignment is <= 0, else 0 (failures included: a failed sample never satisfies it).

    It is the b of distribution matching's ``dm.target: constraint`` (objectives ``dpg``,
    ``fdpg``, ``cdpg``: b = 1 iff the scorer's reward -misalignment is >= 0; for pep8, the
    sample compiles and pycodestyle finds no violation), so RL with a KL penalty on this
    reward sees the same information as CDPG (Korbak et al.'s RL baseline on b).
    """

    def __init__(self, scorer, scale: float = 1.0, text_fn: Callable[[str, bool], str] | None = None) -> None:
        self.sequence = ScorerReward(scorer, 1.0, text_fn)
        self.scale = scale

    def __call__(self, samples: Sequence[Sample]) -> RewardOutput:
        from tokenalign.objectives.dm import DistributionMatching

        out = self.sequence(samples)
        b = DistributionMatching.constraint(torch.tensor(out.scores, dtype=torch.float64))  # the DM objectives' own b
        return RewardOutput([self.scale * float(x) for x in b], None, out.details)


class BlameReward:
    """The scorer's sequence reward, spread over the tokens it blames: gold dense rewards
    (a scorer's own per-token rewards, ``ScoreResult.token_rewards``, land as they are, x scale).

    For a sample with misalignment m and blamed spans b_1..b_n (``ScoreResult.blame``,
    e.g. pycodestyle violations as character spans), each span's token — the one holding
    its last character — gets ``-scale * m / n``; a failure (syntax error, crash) or a score
    with no blamed span puts all of ``-scale * m`` on the last generated token. The token
    rewards of a sample always sum to its sequence reward (``ScorerReward``'s), so dense
    and holistic training see the same total and differ only in where it lands.
    """

    def __init__(self, scorer, scale: float = 1.0, text_fn: Callable[[str, bool], str] | None = None,
                 tokenizer=None) -> None:
        self.sequence = ScorerReward(scorer, scale, text_fn)
        self.text_fn, self.tokenizer = text_fn, tokenizer

    def __call__(self, samples: Sequence[Sample]) -> RewardOutput:
        out = self.sequence(samples)
        token_rewards = []
        for s, score, result in zip(samples, out.scores, out.details):
            n = len(s.generated_ids)
            row = [0.0] * n
            if n:
                blame = [] if result.failed else list(result.blame)
                if result.token_rewards is not None and not result.failed:
                    row = [self.sequence.scale * v for v in result.token_rewards][:n]
                    row += [0.0] * (n - len(row))
                elif blame:
                    text = self.text_fn(s.completion, s.finished) if self.text_fn else s.completion
                    spans = response_char_spans(self.tokenizer, s.generated_ids, text_length=len(text), skip=len(s.healed))
                    row = spans_to_tokens([(b.start, b.end) for b in blame], [score / len(blame)] * len(blame), spans)
                row[-1] += score - sum(row)  # what no token took (failures, spans past the text)
            token_rewards.append(row)
        return RewardOutput(out.scores, token_rewards, out.details)


def spans_to_tokens(
    source_spans: Sequence[tuple[int, int]], source_values: Sequence[float], target_spans: Sequence[tuple[int, int]]
) -> list[float]:
    """Move per-token values from one tokenization to another over the same text: each
    source token's value goes to the target token holding its last character (so every
    value is counted once). Source tokens with empty spans, or past the target's text,
    are dropped."""
    out = torch.zeros(len(target_spans), dtype=torch.float64)
    if not len(target_spans) or not len(source_spans):
        return out.tolist()
    ends = torch.tensor([e for _, e in target_spans], dtype=torch.long)
    src = torch.tensor(list(source_spans), dtype=torch.long)
    vals = torch.tensor(list(source_values), dtype=torch.float64)
    keep = (src[:, 1] > src[:, 0]) & (src[:, 1] <= int(ends.max()))
    if keep.any():
        last_char = src[keep, 1] - 1
        target = torch.searchsorted(ends, last_char, right=True).clamp(max=len(target_spans) - 1)
        out.index_add_(0, target, vals[keep])
    return out.tolist()


class TokenModelReward:
    """Per-token rewards from a trained token reward model.

    The sequence score is the aggregate of the token rewards (``sum``, ``avg``, or ``last``:
    the last token's alone, for a model learned as a sequence reward model), which is what
    ``sequence`` placement uses; ``text_fn`` as in :class:`ScorerReward`.

    ``normalize`` standardises the token rewards over each call's batch (all scored tokens
    of all samples) before they are scaled and placed: ``center`` subtracts their mean,
    ``whiten`` also divides by their standard deviation, ``sequence`` instead divides the
    centred rewards by the standard deviation of the samples' *sums* of them. A
    preference-learned reward is only defined up to a shift (Plackett-Luce sees
    differences), and its scale is whatever the learning reached (bounded rewards of a
    young r_φ vary by ~1e-2 around 0.55). After ``sequence`` a sample's total reward has
    unit scale, like a sequence score, so a per-token KL coefficient means what it means
    with unit-scale sequence rewards; ``whiten`` gives every *token* unit scale, and since
    r_φ's rewards are strongly correlated within a sample (much of it is a per-sample
    level), sums of them then reach tens and dwarf such a KL penalty. Policy tokens past the
    scored text (a cut last line) get 0, the batch mean. Sequence scores stay the raw
    aggregates (what the model says), except with ``aggregate="last"``: a sequence reward
    model's one score is its sample total, so ``normalize`` standardises the scores over
    the batch (``center``: minus their mean; ``whiten``/``sequence``: unit std too), and a
    sequence-placed reward gets the scale a token arm's totals get.

    A model that reads an end-of-response token (``head.end_token``) puts that token's
    reward on the policy token holding the scored text's last character (for an empty
    text, on the last generated token).
    """

    def __init__(self, model, tokenizer, policy_tokenizer, aggregate: Literal["sum", "avg", "last"] = "sum",
                 scale: float = 1.0, text_fn: Callable[[str, bool], str] | None = None, batch_size: int = 32,
                 normalize: Literal["none", "center", "whiten", "sequence"] = "none") -> None:
        if normalize not in ("none", "center", "whiten", "sequence"):
            raise ValueError(f"normalize must be none, center, whiten or sequence, not {normalize!r}")
        self.model, self.tokenizer, self.policy_tokenizer = model, tokenizer, policy_tokenizer
        self.aggregate, self.scale, self.text_fn, self.batch_size = aggregate, scale, text_fn, batch_size
        self.normalize = normalize

    def _normalizer(self, scored) -> tuple[float, float]:
        """(shift, divisor) of this batch's token rewards."""
        values = torch.tensor([v for tr in scored for v in tr.rewards], dtype=torch.float64)
        if self.normalize == "none" or not len(values):
            return 0.0, 1.0
        shift = float(values.mean())
        if self.normalize == "center" or len(values) < 2:
            return shift, 1.0
        if self.normalize == "sequence":
            sums = torch.tensor([sum(v - shift for v in tr.rewards) for tr in scored], dtype=torch.float64)
            spread = float(sums.std()) if len(sums) > 1 else 0.0
        else:
            spread = float(values.std())
        # no spread (an untrained r_φ is constant up to rounding): nothing to scale up
        return shift, spread if spread > 1e-6 else 1.0

    def __call__(self, samples: Sequence[Sample]) -> RewardOutput:
        from tokenalign.rewards.scoring import score_tokens

        texts = [self.text_fn(s.completion, s.finished) if self.text_fn else s.completion for s in samples]
        scored = score_tokens(self.model, self.tokenizer, [s.prompt for s in samples], texts, batch_size=self.batch_size)
        token_rewards, scores = [], []
        shift, div = self._normalizer(scored)
        end_token = bool(getattr(getattr(self.model, "head_config", None), "end_token", False))
        for s, text, tr in zip(samples, texts, scored):
            spans = response_char_spans(self.policy_tokenizer, s.generated_ids, text_length=len(text),
                                        skip=len(s.healed))
            normed = [(v - shift) / div for v in tr.rewards]
            if end_token and normed:
                # the end-of-response token's reward lands on the policy token that ended the
                # scored text (the one holding its last character; for an empty text, the last
                # generated token: what stopped the sample)
                *normed, at_end = normed
                values = spans_to_tokens(tr.spans[: len(normed)], normed, spans)
                if values:
                    last = spans_to_tokens([(len(text) - 1, len(text))], [1.0], spans) if text else [0.0]
                    j = last.index(1.0) if 1.0 in last else len(values) - 1
                    values[j] += at_end
            else:
                values = spans_to_tokens(tr.spans, normed, spans)
            values = [self.scale * v for v in values]
            token_rewards.append(values)
            total = sum(self.scale * v for v in tr.rewards)
            if self.aggregate == "last":
                scores.append(self.scale * tr.rewards[-1] if tr.rewards else 0.0)
            else:
                scores.append(total / max(len(tr.rewards), 1) if self.aggregate == "avg" else total)
        if self.aggregate == "last" and self.normalize != "none" and len(scores) > 1:
            # a sequence reward model's one score is its sample total: normalised as the token
            # arm's totals are (center: minus the batch mean; whiten / sequence: unit spread too)
            values = torch.tensor(scores, dtype=torch.float64)
            spread = float(values.std()) if self.normalize != "center" else 1.0
            scores = ((values - values.mean()) / (spread if spread > 1e-6 else 1.0)).tolist()
        return RewardOutput(scores, token_rewards, scored)


class DensePlusSequenceReward:
    """Dense token rewards plus a sequence reward on the last generated token.

    Fine-grained RLHF (Wu et al. 2023) sums reward models of different densities; here a
    token reward model (e.g. edit-supervised, which never sees samples its editor could
    not fix, such as syntax failures) is combined with the gold sequence score, weighted
    by ``weight``. Sequence score = token model's + weight x scorer's.
    """

    def __init__(self, dense: "TokenModelReward", sequence: ScorerReward, weight: float = 1.0) -> None:
        self.dense, self.sequence, self.weight = dense, sequence, weight

    def __call__(self, samples: Sequence[Sample]) -> RewardOutput:
        d, s = self.dense(samples), self.sequence(samples)
        token = [list(row) for row in d.token_rewards]
        for row, score in zip(token, s.scores):
            if row:
                row[-1] += self.weight * score
        scores = [a + self.weight * b for a, b in zip(d.scores, s.scores)]
        return RewardOutput(scores, token, list(s.details))


def dpo_token_rewards(dpo_logprobs: torch.Tensor, ref_logprobs: torch.Tensor, mask: torch.Tensor, beta: float,
                      clip: float = 0.0) -> torch.Tensor:
    """RTO's token reward (Zhong et al. 2024): r_t = β (log π_dpo(y_t|s_t) - log π_ref(y_t|s_t)),
    each clipped to [-clip, clip] when ``clip`` > 0 (RTO's released code clips at 0.05); zero
    on padding. ``[B, T]`` -> ``[B, T]``."""
    r = beta * (dpo_logprobs.float() - ref_logprobs.float())
    if clip > 0:
        r = r.clamp(-clip, clip)
    return r * mask


class DPOTokenReward:
    """Dense token rewards from a DPO-trained model: β log π_dpo(y_t|s_t)/π_ref(y_t|s_t) on
    each generated token (RTO, Zhong et al. 2024; :func:`dpo_token_rewards`).

    DPO's implicit reward of a response, β log π_dpo(y|x)/π_ref(y|x), is a sum over its
    tokens; RTO reads each term as that token's reward. Both models read the samples' own
    token ids (``prompt_ids`` + ``generated_ids``), so they must share the policy's
    tokenizer. One no-grad forward pass of each model per ``batch_size`` rows; the sequence
    score is the sum of a sample's token rewards (DPO's implicit reward when unclipped).
    """

    def __init__(self, model, ref_model, pad_id: int, beta: float = 0.05, clip: float = 0.0, batch_size: int = 32) -> None:
        self.model, self.ref_model, self.pad_id = model.eval(), ref_model.eval(), pad_id
        self.beta, self.clip, self.batch_size = beta, clip, batch_size

    @torch.no_grad()
    def __call__(self, samples: Sequence[Sample]) -> RewardOutput:
        if not samples:
            return RewardOutput([], [], [])
        device = next(self.model.parameters()).device
        ref_device = next(self.ref_model.parameters()).device
        batch = build_token_batch([s.prompt_ids for s in samples], [s.generated_ids for s in samples], self.pad_id)
        rows: list[list[float]] = []
        for start in range(0, len(samples), self.batch_size):
            sub, _ = batch.rows(list(range(start, min(start + self.batch_size, len(samples))))).trimmed()
            dpo = token_logprobs(self.model, sub.to(device))["logprobs"]
            ref = token_logprobs(self.ref_model, sub.to(ref_device))["logprobs"].to(device)
            r = dpo_token_rewards(dpo, ref, sub.response_mask.to(device), self.beta, self.clip).cpu()
            rows.extend(r[i, : len(samples[start + i].generated_ids)].tolist() for i in range(r.shape[0]))
        return RewardOutput([sum(r) for r in rows], rows, [])


_SENTENCE_END = re.compile(r"[.!?](\s|$)")


def segment_ends(tokenizer, ids: Sequence[int], kind: Literal["line", "sentence"] = "line", skip: int = 0) -> list[bool]:
    """Which tokens end a segment: a line (the token holding a newline) or a sentence (the
    token holding ``.``, ``!`` or ``?`` followed by white space). The last token always does.
    ``skip``: decoded characters that are the prompt's (a healed sample's ``Sample.healed``)."""
    if not ids:
        return []
    text = tokenizer.decode(list(ids))[skip:]
    spans = response_char_spans(tokenizer, ids, skip=skip)
    if kind == "line":
        boundaries = [i for i, c in enumerate(text) if c == "\n"]
    elif kind == "sentence":
        boundaries = [m.start() for m in _SENTENCE_END.finditer(text)]
    else:
        raise ValueError(f"unknown segment kind {kind!r}")
    ends = [False] * len(ids)
    starts = torch.tensor([s for s, _ in spans])
    stops = torch.tensor([e for _, e in spans])
    for c in boundaries:
        hit = ((starts <= c) & (c < stops)).nonzero()
        if len(hit):
            ends[int(hit[0])] = True
    ends[-1] = True
    return ends


def place_rewards(
    placement: Placement,
    mask: torch.Tensor,
    scores: torch.Tensor | None = None,
    token_rewards: torch.Tensor | None = None,
    segment_end: torch.Tensor | None = None,
) -> torch.Tensor:
    """Rewards ``[B, T]`` on right-padded responses.

    ``sequence``: ``scores[i]`` on the last real token of row i. ``token``: the token
    rewards as they are. ``segment``: each segment's summed token rewards on its last token.
    A row with no response token gets nothing (there is no token to carry it).
    """
    m = mask.bool()
    if placement == "sequence":
        if scores is None:
            raise ValueError("sequence placement needs sequence scores")
        lengths = m.sum(dim=1)
        out = torch.zeros(m.shape, dtype=torch.float32, device=m.device)
        rows = (lengths > 0).nonzero().squeeze(1)
        out[rows, lengths[rows] - 1] = scores.to(out)[rows]
        return out
    if token_rewards is None:
        raise ValueError(f"{placement} placement needs per-token rewards (a token reward model)")
    r = token_rewards.float() * m
    if placement == "token":
        return r
    if placement == "segment":
        if segment_end is None:
            raise ValueError("segment placement needs segment ends")
        lengths = m.sum(dim=1)
        last = torch.zeros_like(m)
        rows = (lengths > 0).nonzero().squeeze(1)
        last[rows, lengths[rows] - 1] = True
        ends = (segment_end.bool() & m) | last  # the last token always closes a segment
        c = r.cumsum(dim=1)
        idx = torch.arange(m.shape[1], device=m.device).expand_as(m)
        # cumulative sum at the previous segment end (0 before the first segment)
        prev_end = torch.where(ends, idx, torch.full_like(idx, -1)).cummax(dim=1).values
        prev_end = torch.cat([torch.full_like(prev_end[:, :1], -1), prev_end[:, :-1]], dim=1)
        before = torch.where(prev_end >= 0, c.gather(1, prev_end.clamp(min=0)), torch.zeros_like(c))
        return torch.where(ends, c - before, torch.zeros_like(c))
    raise ValueError(f"unknown reward placement {placement!r}")


REWARD_SOURCES: Registry = Registry("reward source")
register_reward_source = REWARD_SOURCES.register


@register_reward_source("scorer")
def scorer_source(settings, scorer, text_fn, tokenizer, base_model: str) -> ScorerReward:
    """The scorer's sequence reward, ``-reward.scale x misalignment``.

    Every source is built as ``fn(reward settings, scorer, text_fn, policy tokenizer,
    the policy's initial model) -> RewardSource``."""
    return ScorerReward(scorer, settings.scale, text_fn)


@register_reward_source("constraint")
def constraint_source(settings, scorer, text_fn, tokenizer, base_model: str) -> ConstraintReward:
    """The constraint b(y) of distribution matching as a reward: ``reward.scale`` x
    [misalignment <= 0] (pep8: compiles and has no violation), on the last token."""
    return ConstraintReward(scorer, settings.scale, text_fn)


@register_reward_source("blame")
def blame_source(settings, scorer, text_fn, tokenizer, base_model: str) -> BlameReward:
    """The scorer's sequence reward spread over the tokens it blames (gold dense rewards)."""
    return BlameReward(scorer, settings.scale, text_fn, tokenizer)


@register_reward_source("token_model")
def token_model_source(settings, scorer, text_fn, tokenizer, base_model: str):
    """A token reward model trained by ``tokenalign reward`` (``reward.token_model``), plus
    ``reward.plus_scorer`` x the scorer's sequence reward on the last token when set."""
    from pathlib import Path

    from tokenalign.rewards.model import TokenRewardModel
    from tokenalign.utils.models import load_tokenizer

    path = Path(settings.token_model)
    model = TokenRewardModel.from_pretrained(path)
    model_tokenizer = load_tokenizer(path if (path / "tokenizer.json").is_file() else base_model)
    source = TokenModelReward(model, model_tokenizer, tokenizer, settings.aggregate, settings.scale, text_fn,
                              normalize=settings.normalize)
    if settings.plus_scorer:
        source = DensePlusSequenceReward(source, ScorerReward(scorer, 1.0, text_fn), settings.plus_scorer)
    return source


@register_reward_source("dpo")
def dpo_source(settings, scorer, text_fn, tokenizer, base_model: str):
    """RTO's dense reward (Zhong et al. 2024): β log π_dpo/π_ref per token from a DPO-trained
    policy (``reward.model``; reference ``reward.ref_model``, default the run's initial
    model; β ``reward.beta``; ``reward.clip``), plus ``reward.plus_scorer`` x the scorer's
    sequence reward on the last token when set (RTO's sparse sentence-level term)."""
    from tokenalign.errors import ConfigError
    from tokenalign.utils.accel import process_state
    from tokenalign.utils.models import load_causal_lm

    if not settings.model:
        raise ConfigError("reward.source dpo needs reward.model=DIR (a DPO-trained policy: "
                          "the model/ folder of `tokenalign train --set objective=dpo`)")
    device = process_state().device
    models = {}
    for key, path in (("reward.model", settings.model), ("reward.ref_model", settings.ref_model or base_model)):
        model, model_tokenizer = load_causal_lm(str(path))
        if model_tokenizer.get_vocab() != tokenizer.get_vocab():
            raise ConfigError(f"{key} {path}: its tokenizer differs from the policy's; the DPO log-ratio is read on "
                              "the policy's own tokens, so the models must share its tokenizer")
        models[key] = model.to(device).requires_grad_(False)
    source = DPOTokenReward(models["reward.model"], models["reward.ref_model"], tokenizer.pad_token_id,
                            settings.beta, settings.clip)
    if settings.plus_scorer:
        source = DensePlusSequenceReward(source, ScorerReward(scorer, 1.0, text_fn), settings.plus_scorer)
    return source


@register_reward_source("guidance")
def guidance_source(settings, scorer, text_fn, tokenizer, base_model: str):
    """The token guidance r_φ that ``tokenalign align`` learns and re-learns: only that job
    can build it (it owns r_φ)."""
    from tokenalign.errors import ConfigError

    raise ConfigError("reward.source guidance is the token guidance that `tokenalign align` learns; "
                      "use tokenalign align, or reward.source=token_model with a trained model")


def make_reward_source(settings, scorer, text_fn, tokenizer, base_model: str) -> RewardSource:
    """The reward source ``settings.source`` names, built for this run."""
    return REWARD_SOURCES.get(settings.source)(settings, scorer, text_fn, tokenizer, base_model)
