"""Using a trained token reward model: per-token rewards with spans, ranking accuracy."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from itertools import combinations

import torch

from tokenalign.rewards.aggregate import aggregate
from tokenalign.rewards.batching import encode_for_reward
from tokenalign.rewards.model import TokenRewardModel

__all__ = ["TokenRewards", "score_tokens", "ranking_accuracy"]


@dataclasses.dataclass
class TokenRewards:
    """Rewards of one response: one per response token, with its character span."""

    response: str
    token_ids: list[int]
    spans: list[tuple[int, int]]
    rewards: list[float]


@torch.no_grad()
def score_tokens(
    model: TokenRewardModel,
    tokenizer,
    prompts: Sequence[str],
    responses: Sequence[str],
    batch_size: int = 16,
    max_length: int | None = None,
) -> list[TokenRewards]:
    """Per-token rewards of each (prompt, response), in eval mode, batched."""
    model.eval()
    max_length = model.fit_length(max_length)
    device = next(model.parameters()).device
    out: list[TokenRewards] = []
    for start in range(0, len(prompts), batch_size):
        batch = encode_for_reward(
            tokenizer,
            prompts[start : start + batch_size],
            responses[start : start + batch_size],
            is_encoder_decoder=model.is_encoder_decoder,
            max_length=max_length,
            decoder_start_token_id=getattr(model.config, "decoder_start_token_id", None),
            end_token_id=model.end_token_id(tokenizer),
        ).to(device)
        rewards = model(**batch.model_inputs()).float().cpu()
        mask = batch.response_mask.cpu()
        for i, resp in enumerate(responses[start : start + batch_size]):
            out.append(TokenRewards(resp, batch.response_ids[i], batch.response_spans[i], rewards[i][mask[i]].tolist()))
    return out


def ranking_accuracy(
    token_rewards: Sequence[Sequence[TokenRewards]],
    preferences: Sequence[Sequence[float]],
    aggregator: str = "avg",
    beta: float = 2.0,
) -> float:
    """Share of strictly ordered pairs (within each list) that the aggregated scores order
    the same way. Pairs tied in preference are skipped; a tie in score counts half."""
    right, total = 0.0, 0
    for lists, prefs in zip(token_rewards, preferences):
        k, t = len(lists), max(len(x.rewards) for x in lists)
        r = torch.zeros(1, k, t)
        m = torch.zeros(1, k, t, dtype=torch.bool)
        for j, tr in enumerate(lists):
            r[0, j, : len(tr.rewards)] = torch.tensor(tr.rewards)
            m[0, j, : len(tr.rewards)] = True
        seq = aggregate(r, m, aggregator, beta)[0].tolist()
        for a, b in combinations(range(k), 2):
            if prefs[a] == prefs[b]:
                continue
            hi, lo = (a, b) if prefs[a] > prefs[b] else (b, a)
            total += 1
            right += 1.0 if seq[hi] > seq[lo] else 0.5 if seq[hi] == seq[lo] else 0.0
    return right / total if total else float("nan")
