"""Held-out evaluation of a policy on scored prompts: misalignment beside what can fake it.

Reported together so that no degenerate win hides (breaking syntax, collapsing onto one
answer, refusing, drifting from the base model): misalignment from the gold scorer with
failures counted, the violation-free share, KL(π || π_ref) estimated from samples of π at
temperature 1, and the capability guard (``evaluate.capability``): mean length, distinct-n,
refusal and empty shares, perplexity of the responses under the reference model.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch

from tokenalign.evaluate.capability import empty_share, refusal_share, response_perplexity
from tokenalign.rollout.batch import build_token_batch, token_logprobs
from tokenalign.rollout.generate import Sample, SamplingConfig, SamplingSettings, generate

__all__ = ["PolicyEvalSettings", "PolicyEvaluation", "evaluate_policy", "evaluate_policy_with_samples", "distinct_n_tokens",
           "scorer_text_metrics"]


@dataclasses.dataclass
class PolicyEvalSettings:
    """How a policy is evaluated on held-out prompts."""

    samples_per_prompt: int = 1  # samples of each prompt
    seed: int = 1234  # sampling seed (the KL samples use seed + 1)
    kl_samples: bool = True  # also sample at T=1 for the KL estimate (when a reference is given)
    # the PHF paper's evaluation settings (Korbak et al., ICML 2023: temperature 0.7, top-p 0.9);
    # the KL samples use them at temperature 1 without top-p
    sampling: SamplingSettings = dataclasses.field(
        default_factory=lambda: SamplingSettings.for_evaluation(batch_size=64))


def distinct_n_tokens(token_lists: Sequence[Sequence[int]], n: int) -> float:
    """Distinct n-grams over all n-grams of the samples' token ids (0 when there are none)."""
    from tokenalign.evaluate.metrics import distinct_n

    return distinct_n(token_lists, n, tokenize=list)


@torch.no_grad()
def sequence_kl(
    policy, ref_logprobs_fn: Callable, tokenizer, samples: Sequence[Sample], batch_size: int = 64, conditioning=None
) -> float:
    """Mean over samples of Σ_t log π(y_t|s_t) - log π_ref(y_t|s_t): the Monte-Carlo estimate of
    KL(π || π_ref) when the samples come from π at temperature 1.

    Samples of a conditioned model (``conditioning``): the policy's term is the log-prob of
    the path it sampled (its control tokens included, suppressed tokens given no mass), a
    lower bound of log π(text), so the estimate errs low by at most the entropy of where the
    control tokens go; the reference scores the text in its own tokenisation.
    """
    device = next(policy.parameters()).device
    pad = tokenizer.pad_token_id
    total, n = 0.0, 0
    for start in range(0, len(samples), batch_size):
        chunk = samples[start : start + batch_size]
        if conditioning is not None:
            seen = build_token_batch([s.conditioned_ids[0] for s in chunk], [s.conditioned_ids[1] for s in chunk], pad).to(device)
            logp = token_logprobs(policy, seen, exclude_ids=sorted(conditioning.suppressed_ids))["logprobs"].float()
            pol = (logp * seen.response_mask).sum(dim=1)
            responses = [_retokenized(tokenizer, s.generated_ids) for s in chunk]
        else:
            responses = [s.generated_ids for s in chunk]
        plain = build_token_batch([s.prompt_ids for s in chunk], responses, pad).to(device)
        ref = (ref_logprobs_fn(plain).float() * plain.response_mask).sum(dim=1)
        if conditioning is None:
            pol = (token_logprobs(policy, plain)["logprobs"].float() * plain.response_mask).sum(dim=1)
        total += float((pol - ref).sum())
        n += len(chunk)
    return total / max(n, 1)


def scorer_text_metrics(scorer, texts: Sequence[str]) -> dict[str, float]:
    """The scorer's own "what to watch" metrics of the scored texts (``scorer.text_metrics``,
    e.g. pep8's comment-line share), or none when it has no such method."""
    fn = getattr(scorer, "text_metrics", None)
    return dict(fn(list(texts))) if callable(fn) else {}


def _retokenized(tokenizer, ids: Sequence[int]) -> list[int]:
    """The tokenizer's own tokenisation of the text of ``ids`` (a final EOS kept)."""
    eos = tokenizer.eos_token_id
    ended = bool(ids) and ids[-1] == eos
    body = list(ids[:-1]) if ended else list(ids)
    out = tokenizer(tokenizer.decode(body), add_special_tokens=False)["input_ids"]
    return out + [eos] if ended else out


@dataclasses.dataclass
class PolicyEvaluation:
    """One held-out evaluation in full: what was sampled and scored, and its summary."""

    samples: list[Sample]  # as sampled: each prompt ``samples_per_prompt`` times in a row
    texts: list[str]  # what the scorer read: ``text_fn(completion, finished)``
    results: list  # the scorer's result of each text
    statistics: dict[str, float]  # every score statistic (``summarize_scores``) and the scorer's text metrics
    summary: dict[str, float]  # the evaluation report (what :func:`evaluate_policy` returns)
    sample_seconds: float = 0.0  # time spent sampling (the KL samples included)
    score_seconds: float = 0.0  # time spent scoring

    def scored_samples(self) -> list[Sample]:
        """The samples with the scored text as their completion (token ids unchanged)."""
        return [dataclasses.replace(x, completion=t) for x, t in zip(self.samples, self.texts)]


def evaluate_policy_with_samples(
    policy,
    tokenizer,
    prompts: Sequence[str],
    scorer,
    settings: PolicyEvalSettings | None = None,
    stop: Sequence[str] = (),
    text_fn: Callable[[str, bool], str] | None = None,
    ref_logprobs_fn: Callable | None = None,
    conditioning=None,
) -> PolicyEvaluation:
    """Sample ``settings.samples_per_prompt`` completions of each prompt, score and summarise
    them; returns the samples and scores with the summary (for reports that show them).
    ``ref_logprobs_fn(batch) -> [B, R]`` enables the KL; ``conditioning`` samples a
    conditionally trained model from ``<|good|>``."""
    from tokenalign.scorers import summarize_scores

    s = settings or PolicyEvalSettings()
    was_training = policy.training
    policy.eval()
    cfg = SamplingConfig.of(s.sampling, stop=list(stop), seed=s.seed)
    inputs = [p for p in prompts for _ in range(s.samples_per_prompt)]
    t0 = time.perf_counter()
    samples = generate(policy, tokenizer, inputs, cfg, progress=False, conditioning=conditioning)
    sample_seconds = time.perf_counter() - t0
    texts = [text_fn(x.completion, x.finished) if text_fn else x.completion for x in samples]
    t0 = time.perf_counter()
    results = scorer.score(texts, [x.prompt for x in samples])
    score_seconds = time.perf_counter() - t0
    scores = summarize_scores(results, scorer)
    text_metrics = scorer_text_metrics(scorer, texts)
    out = {k: v for k, v in scores.items()
           if k.startswith("mean_") or k in ("violation_free_rate", "syntax_failure_rate", "failure_rate")}
    out["mean_length_tokens"] = sum(len(x.completion_ids) for x in samples) / max(len(samples), 1)
    out["mean_length_chars"] = sum(len(t) for t in texts) / max(len(texts), 1)
    for n in (1, 2, 3):
        out[f"distinct_{n}"] = distinct_n_tokens([x.completion_ids for x in samples], n)
    out["refusal_share"] = refusal_share(texts)
    out["empty_share"] = empty_share(texts)
    out.update(text_metrics)
    if ref_logprobs_fn is not None:
        device = next(policy.parameters()).device
        out["perplexity_under_ref"] = response_perplexity(ref_logprobs_fn, tokenizer, samples, s.sampling.batch_size, device)
    if ref_logprobs_fn is not None and s.kl_samples:
        t0 = time.perf_counter()
        kl_cfg = dataclasses.replace(cfg, temperature=1.0, top_p=1.0, seed=s.seed + 1)
        kl_samples = generate(policy, tokenizer, inputs, kl_cfg, progress=False, conditioning=conditioning)
        sample_seconds += time.perf_counter() - t0
        out["kl_to_ref"] = sequence_kl(policy, ref_logprobs_fn, tokenizer, kl_samples, s.sampling.batch_size, conditioning)
    policy.train(was_training)
    return PolicyEvaluation(samples, texts, results, {**scores, **text_metrics}, out, sample_seconds, score_seconds)


def evaluate_policy(*args: Any, **kwargs: Any) -> dict[str, float]:
    """:func:`evaluate_policy_with_samples` (same arguments), the summary only: the held-out
    ``eval_*`` entries of a training run."""
    return evaluate_policy_with_samples(*args, **kwargs).summary
