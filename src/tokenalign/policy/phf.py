"""PHF objectives (SPEC 3.4; Korbak et al. 2023, "Pretraining language models with human
preferences"): MLE, filtering, unlikelihood, RWR, AWR and conditional training.

Tensors are right-padded ``[B, T]``: ``logprobs`` the log-prob of each target token,
``mask`` (bool) marks real tokens, and per-token ``rewards`` are R = -s, minus the
misalignment score of the segment that holds the token (see
:mod:`tokenalign.data.segments`). "mean" is over all real tokens of the batch
(:func:`masked_mean`). Thresholds are hard: aligned iff s <= t, also for t = 0 (the
reference code read a threshold of 0 as "no threshold" through a truthiness test).

Conditional training prefixes each segment with ``<|good|>`` (s <= t) or ``<|bad|>``,
except for a segment left unprefixed with probability ``drop_prob``; at generation time
:class:`ControlTokenProcessor` keeps samples in the ``<|good|>`` format.
"""

from __future__ import annotations

import inspect
import math
import random
from collections.abc import Iterable, Sequence

import torch

from tokenalign.policy.losses import masked_mean

try:
    from transformers import LogitsProcessor
except ImportError:  # pragma: no cover - transformers is a core dependency
    LogitsProcessor = object  # type: ignore[misc,assignment]

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
    "newline_token_ids",
    "multiline_token_ids",
    "ControlTokenProcessor",
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

    Each segment is tokenised on its own (``add_special_tokens=False``) and prefixed with
    ``good_id`` if its score is <= ``threshold`` (hard, also at 0), else ``bad_id``; with
    probability ``drop_prob`` a segment gets no prefix. One ``rng.random()`` draw per
    segment, whatever ``drop_prob``. No BOS/EOS is added. The LM trains on all of these
    ids, control tokens included.
    """
    pieces = [text[s:e] for s, e, _ in segments]
    if not pieces:
        return []
    encoded = tokenizer(pieces, add_special_tokens=False)["input_ids"]
    ids: list[int] = []
    for (_, _, score), piece_ids in zip(segments, encoded):
        if not rng.random() < drop_prob:
            ids.append(good_id if score <= threshold else bad_id)
        ids.extend(piece_ids)
    return ids


def _decoded_vocab(tokenizer) -> list[str]:
    size = max(len(tokenizer), getattr(tokenizer, "vocab_size", 0) or 0)
    return tokenizer.batch_decode([[i] for i in range(size)])


def newline_token_ids(tokenizer) -> set[int]:
    """Ids whose decoded text ends with ``"\\n"`` (one batched decode of the vocabulary)."""
    return {i for i, s in enumerate(_decoded_vocab(tokenizer)) if s.endswith("\n")}


def multiline_token_ids(tokenizer) -> set[int]:
    """Ids whose decoded text holds a ``"\\n"`` before its last character (``"\\n    "``,
    ``"\\n\\n"``).

    The segment-wise training format never contains them (every newline ends a segment and
    is followed by a control token), so passing them to :class:`ControlTokenProcessor` as
    ``blocked_ids`` keeps generated code in that format. Byte-level tokenizers merge a
    newline with the next line's indentation, so without this most lines would start
    without ``<|good|>``.
    """
    return {i for i, s in enumerate(_decoded_vocab(tokenizer)) if "\n" in s[:-1]}


class ControlTokenProcessor(LogitsProcessor):
    """Generation conditioned on ``<|good|>`` (a ``transformers`` logits processor).

    Text (``newline_ids`` None): both control tokens are blocked (logit -inf); start the
    prompt with ``<|good|>``. Code: ``<|bad|>`` is always blocked and ``<|good|>`` is
    forced (every other logit -inf) right after any token in ``newline_ids`` and blocked
    elsewhere, so samples come from p(y | every line prefixed with <|good|>), the
    segment-wise training format. ``blocked_ids`` are always blocked (e.g.
    :func:`multiline_token_ids`). Returns a new tensor; ``scores`` is not modified.
    """

    def __init__(
        self, good_id: int, bad_id: int, newline_ids: Iterable[int] | None = None, blocked_ids: Iterable[int] = ()
    ) -> None:
        self.good_id, self.bad_id = int(good_id), int(bad_id)
        self.newline_ids = None if newline_ids is None else sorted({int(i) for i in newline_ids})
        self.blocked_ids = sorted({int(i) for i in blocked_ids})
        self._cache: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}

    def _tables(self, vocab: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        key = (vocab, str(device))
        if key not in self._cache:
            blocked = torch.zeros(vocab, dtype=torch.bool, device=device)
            blocked[[i for i in self.blocked_ids + [self.good_id, self.bad_id] if i < vocab]] = True
            is_newline = torch.zeros(max(vocab, self.good_id + 1, self.bad_id + 1), dtype=torch.bool, device=device)
            is_newline[[i for i in (self.newline_ids or []) if i < len(is_newline)]] = True
            self._cache[key] = (blocked, is_newline)
        return self._cache[key]

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        vocab = scores.shape[-1]
        blocked, is_newline = self._tables(vocab, scores.device)
        out = scores.masked_fill(blocked, -math.inf)
        if self.newline_ids is None or input_ids.shape[-1] == 0:
            return out
        last = input_ids[:, -1].clamp(min=0, max=len(is_newline) - 1)
        force = is_newline[last]  # [B]
        if bool(force.any()):
            forced = torch.full_like(scores, -math.inf)
            forced[:, self.good_id] = 0.0
            out = torch.where(force.unsqueeze(-1), forced, out)
        return out


def strip_control_tokens(ids: Sequence[int], control_ids: Iterable[int]) -> list[int]:
    """``ids`` without the control tokens (to decode or score a conditioned sample)."""
    control = set(control_ids)
    return [int(i) for i in ids if int(i) not in control]
