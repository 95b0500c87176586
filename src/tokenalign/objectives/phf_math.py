"""PHF objectives (Korbak et al., ICML 2023, "Pretraining language models with human
preferences"): MLE, filtering, unlikelihood, RWR, AWR and conditional training.

Tensors are right-padded ``[B, T]``: ``logprobs`` the log-prob of each target token,
``mask`` (bool) marks real tokens, and per-token ``rewards`` are R = -s, minus the
misalignment score of the segment that holds the token (see
:mod:`tokenalign.data.segments`). "mean" is over all real tokens of the batch
(:func:`masked_mean`). Thresholds are hard: aligned iff s <= t, also for t = 0 (the
reference code read a threshold of 0 as "no threshold" through a truthiness test).

Conditional training puts ``<|good|>`` (s <= t) or ``<|bad|>`` before each segment,
except for a segment left unmarked with probability ``drop_prob``; sampling from
``<|good|>`` is :mod:`tokenalign.objectives.conditioning`.
"""

from __future__ import annotations

import inspect
import math
import random
from collections.abc import Iterable, Sequence

import torch

from tokenalign.objectives.losses import masked_mean

__all__ = [
    "aligned_tokens",
    "keep_for_filtering",
    "mle_loss",
    "log1m_exp",
    "unlikelihood_loss",
    "rwr_weights",
    "rwr_loss",
    "awr_loss",
    "add_control_tokens",
    "conditional_token_ids",
    "strip_control_tokens",
]


# --------------------------------------------------------------------------- thresholds


def aligned_tokens(token_scores: torch.Tensor, threshold: float) -> torch.Tensor:
    """Bool tensor: a token is aligned iff its segment's score is <= ``threshold`` (hard, also at 0)."""
    return token_scores <= threshold


def keep_for_filtering(doc_scores: Sequence[float], threshold: float) -> list[bool]:
    """Filtering: keep a document iff its mean segment score is <= ``threshold``.

    A NaN score is never <= t, so an unscored document is dropped, not kept.
    """
    return [bool(s <= threshold) for s in doc_scores]


# --------------------------------------------------------------------------- losses


def mle_loss(logprobs: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Plain cross-entropy: -mean_t log p(y_t)."""
    return -masked_mean(logprobs, mask)


def log1m_exp(logprobs: torch.Tensor, min_prob: float = 1e-5) -> torch.Tensor:
    """log(1 - p) from log p, with 1 - p floored at ``min_prob``.

    ``-expm1(log p)`` is exact for p near 1 (where ``1 - exp(log p)`` rounds to 0 in
    float32); the floor, applied before the log, keeps p -> 1 at a large finite value
    with a finite (zero) gradient instead of -inf / NaN.
    """
    return torch.log((-torch.expm1(logprobs.clamp(max=0.0))).clamp(min=min_prob))


def unlikelihood_loss(
    logprobs: torch.Tensor, aligned: torch.Tensor, mask: torch.Tensor, alpha: float, min_prob: float = 1e-5
) -> torch.Tensor:
    """Per token -log p(y_t) if aligned else -α log(1 - p(y_t)); mean over real tokens.

    ``min_prob`` floors 1 - p (as in Welleck et al.'s unlikelihood code, 1e-5), so a
    misaligned token with p ≈ 1 costs at most -α log(min_prob) per token.
    """
    per_token = torch.where(aligned, -logprobs, -alpha * log1m_exp(logprobs, min_prob))
    return masked_mean(per_token, mask)


def rwr_weights(rewards: torch.Tensor, beta: float, max_weight: float = 1000.0) -> torch.Tensor:
    """clamp(exp(R / β), max ``max_weight``), as constants (no gradient).

    The exponent is clamped at log(max_weight) before the exp, so a huge R/β gives
    ``max_weight`` rather than overflowing to inf first.
    """
    exponent = (rewards.detach() / beta).clamp(max=math.log(max_weight))
    return exponent.exp().clamp(max=max_weight)


def rwr_loss(
    logprobs: torch.Tensor, rewards: torch.Tensor, mask: torch.Tensor, beta: float, max_weight: float = 1000.0
) -> torch.Tensor:
    """Reward-weighted regression: mean_t -w_t log p(y_t), w_t = :func:`rwr_weights` of R_t = -s_t."""
    return masked_mean(-rwr_weights(rewards, beta, max_weight) * logprobs, mask)


def awr_loss(
    logprobs: torch.Tensor,
    rewards: torch.Tensor,
    values: torch.Tensor,
    mask: torch.Tensor,
    alpha: float,
    beta: float,
    max_weight: float = 1000.0,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Advantage-weighted regression: α mean_t(-w_t log p(y_t)) + (1 - α) mean_t (V_t - R_t)^2.

    w_t = clamp(exp((R_t - V_t) / β), max ``max_weight``) with V detached, so the value
    head learns from the MSE term only. Stats: ``mean_weight``, ``clamped_fraction``
    (share of real tokens whose weight hit ``max_weight``), ``policy_loss``, ``value_loss``.
    """
    advantage = rewards.detach() - values.detach()
    weights = rwr_weights(advantage, beta, max_weight)
    policy = masked_mean(-weights * logprobs, mask)
    value = masked_mean((values - rewards.detach()) ** 2, mask)
    loss = alpha * policy + (1.0 - alpha) * value
    with torch.no_grad():
        stats = {
            "mean_weight": masked_mean(weights, mask).item(),
            "clamped_fraction": masked_mean((advantage / beta > math.log(max_weight)).to(weights.dtype), mask).item(),
            "policy_loss": policy.item(),
            "value_loss": value.item(),
        }
    return loss, stats


# --------------------------------------------------------------------------- conditional training


def add_control_tokens(
    model, tokenizer, tokens: Sequence[str] = ("<|good|>", "<|bad|>"), noise_std: float = 0.01, seed: int = 0
) -> list[int]:
    """Add ``tokens`` as special tokens and give them fresh embedding rows; their ids.

    A new row starts at the mean of the existing rows plus Gaussian noise whose std is
    ``noise_std`` times the std of the existing rows' entries (relative, so the same
    value suits any embedding scale). The output-embedding rows (and bias entries) are
    set the same way when the LM head is not tied to the input embeddings. The embedding
    matrix only grows (a matrix already padded past the vocabulary keeps its size).
    Idempotent: if every token is already in the tokenizer and has a row in the model,
    nothing changes and the ids are returned.
    """
    vocab = tokenizer.get_vocab()
    missing = [t for t in tokens if t not in vocab]
    if missing:
        params = inspect.signature(tokenizer.add_special_tokens).parameters
        keep = {k: False for k in ("replace_extra_special_tokens", "replace_additional_special_tokens") if k in params}
        tokenizer.add_special_tokens({"additional_special_tokens": missing}, **keep)
    ids = [int(i) for i in tokenizer.convert_tokens_to_ids(list(tokens))]
    added = set(tokenizer.convert_tokens_to_ids(missing)) if missing else set()
    n_old = model.get_input_embeddings().weight.shape[0]
    fresh = sorted(added | {i for i in ids if i >= n_old})
    if not fresh:
        return ids
    if max(ids) >= n_old:
        model.resize_token_embeddings(max(ids) + 1, mean_resizing=False)
    generator = torch.Generator().manual_seed(seed)
    matrices = [model.get_input_embeddings()]
    out = model.get_output_embeddings()
    if out is not None and out.weight.data_ptr() != matrices[0].weight.data_ptr():
        matrices.append(out)
    new = torch.tensor(fresh, dtype=torch.long)
    is_old = torch.ones(n_old, dtype=torch.bool)
    is_old[new[new < n_old]] = False
    old = is_old.nonzero().squeeze(-1)
    with torch.no_grad():
        for module in matrices:
            weight = module.weight
            ref = weight[old.to(weight.device)].float()
            noise = torch.randn((len(fresh), weight.shape[1]), generator=generator) * (noise_std * ref.std().item())
            rows = ref.mean(dim=0, keepdim=True).cpu() + noise
            weight[new.to(weight.device)] = rows.to(weight.device, weight.dtype)
            bias = getattr(module, "bias", None)
            if isinstance(bias, torch.Tensor) and bias.shape[0] == weight.shape[0]:
                bias[new.to(bias.device)] = bias[old.to(bias.device)].mean()
    return ids


def conditional_token_ids(
    tokenizer,
    text: str,
    segments: Sequence[tuple[int, int, float]],
    threshold: float,
    drop_prob: float,
    good_id: int,
    bad_id: int,
    rng: random.Random,
) -> list[int]:
    """Token ids of ``text`` in the conditional-training format.

    The document keeps the LM's own tokenisation (tokenising segments apart would split
    merges such as a newline + the next line's indentation, which the base model never
    saw split); a control token goes before the token holding each segment's first
    character: ``good_id`` if the segment's score is <= ``threshold`` (hard, also at 0),
    else ``bad_id``. Segments starting inside one token share one control token, bad if any
    of them is bad. With probability ``drop_prob`` an insertion point gets no control token
    (one ``rng.random()`` draw per insertion point). No BOS/EOS is added; the LM trains on
    every id, control tokens included.
    """
    if not text or not segments:
        return []
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ids, ends = enc["input_ids"], [e for _, e in enc["offset_mapping"]]
    worst: dict[int, float] = {}  # token index -> the worst score of the segments starting in it
    k = 0
    for start, _, score in segments:
        while k < len(ids) and ends[k] <= start:
            k += 1
        if k < len(ids):
            worst[k] = max(worst.get(k, -math.inf), score)
    out: list[int] = []
    for i, token in enumerate(ids):
        if i in worst and not rng.random() < drop_prob:
            out.append(good_id if worst[i] <= threshold else bad_id)
        out.append(token)
    return out


def strip_control_tokens(ids: Sequence[int], control_ids: Iterable[int]) -> list[int]:
    """``ids`` without the control tokens (to decode or score a conditioned sample)."""
    control = set(control_ids)
    return [int(i) for i in ids if int(i) not in control]
