"""Turn (prompt, response) texts into reward-model batches, keeping response token spans.

Prompt and response are tokenized separately and concatenated — exactly how a policy
produces a response after its prompt — so a token reward always belongs to one response
token whose character span in the response is known (for heatmaps and blame).

:func:`encode_for_reward` = :func:`tokenize_for_reward` + :func:`collate_for_reward`; a
learner tokenizes its data once and only collates per batch. :func:`pack_shared_prompt`
lays out K responses of one prompt as one row that holds the prompt once (causal
backbones): each response attends to the prompt and to itself, its position ids restart
where the prompt ends, so its rewards are those of its own ``prompt + response`` row.

Sequences longer than ``max_length`` are cut, never dropped; both collators count them
and log a warning with running totals at the 1st, 10th, 100th, ... batch that cut one.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence

import torch

from tokenalign.data.truncation import truncate_pair

log = logging.getLogger(__name__)

__all__ = [
    "TRUNCATION",
    "TruncationLog",
    "RewardBatch",
    "PackedRewardBatch",
    "encode_for_reward",
    "tokenize_for_reward",
    "collate_for_reward",
    "pack_shared_prompt",
]


class TruncationLog:
    """Running count of sequences cut to ``max_length``, so that a long job warns a few
    times with totals (at the 1st, 10th, 100th, ... batch that cut one), not per batch."""

    def __init__(self) -> None:
        self.n_seen = self.n_cut = self.n_batches_cut = 0
        self._next_warning = 1

    def note(self, n_cut: int, n_rows: int, max_length: int | None) -> None:
        """Count one batch of ``n_rows`` sequences, ``n_cut`` of them truncated."""
        self.n_seen += n_rows
        if not n_cut:
            return
        self.n_cut += n_cut
        self.n_batches_cut += 1
        if self.n_batches_cut >= self._next_warning:
            self._next_warning *= 10
            log.warning("%d of %d reward-model sequences so far were longer than max_length=%s tokens and were cut "
                        "(the prompt's start or the response's end); raise max_length to keep them whole",
                        self.n_cut, self.n_seen, max_length)


TRUNCATION = TruncationLog()
"""This process's count of truncated sequences, over every batch built here."""


@dataclasses.dataclass
class RewardBatch:
    """Tensors for :class:`~tokenalign.rewards.model.TokenRewardModel` plus bookkeeping.

    ``response_mask[B, T]`` marks, at the positions where rewards are read, the response
    tokens; ``response_ids`` / ``response_spans`` list each sample's response tokens and
    their character spans in the response text.
    """

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    response_mask: torch.Tensor
    decoder_input_ids: torch.Tensor | None
    decoder_attention_mask: torch.Tensor | None
    response_ids: list[list[int]]
    response_spans: list[list[tuple[int, int]]]
    n_truncated: int = 0

    def model_inputs(self, with_response_mask: bool = False) -> dict[str, torch.Tensor]:
        out = {"input_ids": self.input_ids, "attention_mask": self.attention_mask}
        if with_response_mask:
            out["response_mask"] = self.response_mask
        if self.decoder_input_ids is not None:
            out["decoder_input_ids"] = self.decoder_input_ids
            out["decoder_attention_mask"] = self.decoder_attention_mask
        return out

    def to(self, device: torch.device | str) -> "RewardBatch":
        moved = {
            f.name: (v.to(device) if isinstance(v := getattr(self, f.name), torch.Tensor) else v)
            for f in dataclasses.fields(self)
        }
        return RewardBatch(**moved)


def _pad(rows: Sequence[Sequence[int]], value: int, width: int | None = None) -> torch.Tensor:
    width = max((len(r) for r in rows), default=0) if width is None else width
    out = torch.full((len(rows), max(width, 1)), value, dtype=torch.long)
    for i, row in enumerate(rows):
        out[i, : len(row)] = torch.tensor(row, dtype=torch.long)
    return out


def tokenize_for_reward(
    tokenizer,
    prompts: Sequence[str],
    responses: Sequence[str],
    *,
    with_offsets: bool = True,
    end_token_id: int | None = None,
) -> tuple[list[list[int]], list[list[int]], list[list[tuple[int, int]]] | None]:
    """Token ids of prompts (with the tokenizer's special tokens) and of responses (without),
    and, with ``with_offsets``, each response token's character span. ``end_token_id``: an
    end-of-response token appended to every response (its span: empty, at the text's end)."""
    if len(prompts) != len(responses):
        raise ValueError(f"{len(prompts)} prompts but {len(responses)} responses")
    p_enc = tokenizer(list(prompts), add_special_tokens=True)["input_ids"]
    r_enc = tokenizer(list(responses), add_special_tokens=False, return_offsets_mapping=with_offsets)
    r_ids = [list(row) for row in r_enc["input_ids"]]
    offsets = [[tuple(o) for o in row] for row in r_enc["offset_mapping"]] if with_offsets else None
    if end_token_id is not None:
        for i, text in enumerate(responses):
            r_ids[i].append(end_token_id)
            if offsets is not None:
                offsets[i].append((len(text), len(text)))
    return list(p_enc), r_ids, offsets


def pad_token_id(tokenizer) -> int:
    """The tokenizer's pad id, else its eos id (an error when it has neither)."""
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    if pad_id is None:
        raise ValueError("the tokenizer has neither a pad nor an eos token")
    return pad_id


def encode_for_reward(
    tokenizer,
    prompts: Sequence[str],
    responses: Sequence[str],
    *,
    is_encoder_decoder: bool = False,
    max_length: int | None = None,
    max_prompt_length: int | None = None,
    decoder_start_token_id: int | None = None,
    end_token_id: int | None = None,
) -> RewardBatch:
    """Tokenize and right-pad a batch. Over-long inputs keep the prompt's tail and cut the
    response's end (counted in ``n_truncated``, never dropped)."""
    if len(prompts) != len(responses):
        raise ValueError(f"{len(prompts)} prompts but {len(responses)} responses")
    pad_id = pad_token_id(tokenizer)
    p_enc, r_ids, r_off = tokenize_for_reward(tokenizer, prompts, responses, end_token_id=end_token_id)
    return collate_for_reward(
        p_enc, r_ids, r_off, pad_id=pad_id, is_encoder_decoder=is_encoder_decoder, max_length=max_length,
        max_prompt_length=max_prompt_length, decoder_start_token_id=decoder_start_token_id,
    )


def collate_for_reward(
    prompt_ids: Sequence[Sequence[int]],
    response_ids: Sequence[Sequence[int]],
    response_offsets: Sequence[Sequence[tuple[int, int]]] | None = None,
    *,
    pad_id: int,
    is_encoder_decoder: bool = False,
    max_length: int | None = None,
    max_prompt_length: int | None = None,
    decoder_start_token_id: int | None = None,
) -> RewardBatch:
    """Truncate and right-pad already tokenized (prompt, response) pairs into a batch.

    Without ``response_offsets`` the batch's ``response_spans`` are empty lists (training
    needs no character spans)."""
    if len(prompt_ids) != len(response_ids):
        raise ValueError(f"{len(prompt_ids)} prompts but {len(response_ids)} responses")
    if response_offsets is None:
        response_offsets = [()] * len(response_ids)
    inputs, resp_ids, resp_spans, n_truncated = [], [], [], 0
    for p_ids, r_ids, r_off in zip(prompt_ids, response_ids, response_offsets):
        p_ids, r_ids, r_off = list(p_ids), list(r_ids), [tuple(o) for o in r_off]
        cut = False
        if max_prompt_length is not None and len(p_ids) > max_prompt_length:
            p_ids, cut = p_ids[len(p_ids) - max_prompt_length :], True
        if is_encoder_decoder:
            # The encoder reads the prompt, the decoder [start] + response.
            _, r_ids, cut_r = truncate_pair([], r_ids, max_length - 1 if max_length else None)
            p_ids, _, cut_p = truncate_pair(p_ids, [], max_length)
            cut = cut or cut_r or cut_p
        else:
            p_ids, r_ids, cut_pr = truncate_pair(p_ids, r_ids, max_length)
            cut = cut or cut_pr
        r_off = r_off[: len(r_ids)]
        n_truncated += cut
        inputs.append(p_ids)
        resp_ids.append(r_ids)
        resp_spans.append(r_off)
    TRUNCATION.note(n_truncated, len(inputs), max_length)
    if is_encoder_decoder:
        start = decoder_start_token_id if decoder_start_token_id is not None else pad_id
        enc = _pad(inputs, pad_id)
        enc_mask = _pad([[1] * len(x) for x in inputs], 0)
        dec_rows = [[start] + r for r in resp_ids]
        dec = _pad(dec_rows, pad_id)
        dec_mask = _pad([[1] * len(x) for x in dec_rows], 0)
        resp_mask = _pad([[0] + [1] * len(r) for r in resp_ids], 0).bool()
        return RewardBatch(enc, enc_mask, resp_mask, dec, dec_mask, resp_ids, resp_spans, n_truncated)
    rows = [p + r for p, r in zip(inputs, resp_ids)]
    ids = _pad(rows, pad_id)
    mask = _pad([[1] * len(x) for x in rows], 0)
    resp_mask = _pad([[0] * len(p) + [1] * len(r) for p, r in zip(inputs, resp_ids)], 0).bool()
    return RewardBatch(ids, mask, resp_mask, None, None, resp_ids, resp_spans, n_truncated)


@dataclasses.dataclass
class PackedRewardBatch:
    """Lists of responses to one prompt, one row per list, the prompt held once.

    ``attention_mask[B, 1, L, L]`` (boolean, True = may attend; or additive float, 0 or a
    large negative number, for eager attention) lets a prompt token see the prompt before
    it and a response token see its prompt and its own response up to itself; padding sees
    only itself. ``position_ids`` restart after the prompt for every response.
    ``token_index[B, K, T]`` holds, for response k of list b, the flat index into
    ``[B * L]`` of its t-th token (0 where ``token_mask`` is False), so per-position rewards
    ``r[B, L]`` become ``r.reshape(-1)[token_index]`` — the ``[N, K, T]`` layout of
    :func:`~tokenalign.rewards.aggregate.aggregate`.
    """

    input_ids: torch.Tensor
    position_ids: torch.Tensor
    attention_mask: torch.Tensor
    response_mask: torch.Tensor
    token_index: torch.Tensor
    token_mask: torch.Tensor
    n_truncated: int = 0

    def model_inputs(self) -> dict[str, torch.Tensor]:
        return {"input_ids": self.input_ids, "attention_mask": self.attention_mask,
                "position_ids": self.position_ids, "response_mask": self.response_mask}

    def to(self, device: torch.device | str) -> "PackedRewardBatch":
        moved = {
            f.name: (v.to(device) if isinstance(v := getattr(self, f.name), torch.Tensor) else v)
            for f in dataclasses.fields(self)
        }
        return PackedRewardBatch(**moved)


def pack_shared_prompt(
    lists: Sequence[tuple[Sequence[int], Sequence[Sequence[int]]]],
    *,
    pad_id: int,
    max_length: int | None = None,
    mask_format: str = "bool",
    pad_to_multiple_of: int = 1,
) -> PackedRewardBatch:
    """One row per ``(prompt_ids, [response_ids, ...])``: ``prompt, response_1, ..., response_K``.

    Each (prompt, response) is truncated exactly as :func:`collate_for_reward` would, so a
    response whose truncation keeps a different part of the prompt gets its own copy of
    that prompt in the row. ``mask_format``: ``bool`` (sdpa) or ``additive`` (eager).
    ``pad_to_multiple_of`` rounds the row width up: fewer distinct shapes, so fewer cached
    kernels (oneDNN keeps one per shape, with its memory).
    """
    if mask_format not in ("bool", "additive"):
        raise ValueError(f"unknown mask_format {mask_format!r}")
    rows, groups, branches, positions, spans = [], [], [], [], []
    n_truncated, k_max = 0, max((len(r) for _, r in lists), default=1)
    for prompt, responses in lists:
        ids: list[int] = []
        grp: list[int] = []
        br: list[int] = []
        pos: list[int] = []
        where: list[tuple[int, int]] = []
        prompt_group: dict[tuple[int, ...], int] = {}
        for j, resp in enumerate(responses):
            p_ids, r_ids, cut = truncate_pair(prompt, resp, max_length)
            n_truncated += cut
            key = tuple(p_ids)
            if key not in prompt_group:
                prompt_group[key] = g = len(prompt_group)
                ids += p_ids
                grp += [g] * len(p_ids)
                br += [-1] * len(p_ids)
                pos += range(len(p_ids))
            g = prompt_group[key]
            where.append((len(ids), len(r_ids)))
            ids += r_ids
            grp += [g] * len(r_ids)
            br += [j] * len(r_ids)
            pos += range(len(p_ids), len(p_ids) + len(r_ids))
        rows.append(ids)
        groups.append(grp)
        branches.append(br)
        positions.append(pos)
        spans.append(where)
    TRUNCATION.note(n_truncated, sum(len(r) for _, r in lists), max_length)
    n, width = len(rows), max(max((len(r) for r in rows), default=1), 1)
    width = -(-width // pad_to_multiple_of) * pad_to_multiple_of
    input_ids = _pad(rows, pad_id, width)
    position_ids = _pad(positions, 0, width)
    grp = _pad(groups, -1, width)
    br = _pad(branches, -1, width)
    causal = torch.ones(width, width, dtype=torch.bool).tril()
    allowed = (
        causal
        & (grp.unsqueeze(2) == grp.unsqueeze(1))
        & (grp.unsqueeze(1) >= 0)
        & ((br.unsqueeze(1) == -1) | (br.unsqueeze(2) == br.unsqueeze(1)))
    ) | torch.eye(width, dtype=torch.bool)  # padding attends to itself only: no empty softmax rows
    attention_mask = allowed.unsqueeze(1)
    if mask_format == "additive":
        attention_mask = torch.zeros(attention_mask.shape).masked_fill_(~attention_mask, torch.finfo(torch.float32).min)
    t_max = max((length for where in spans for _, length in where), default=1) or 1
    token_index = torch.zeros(n, k_max, t_max, dtype=torch.long)
    token_mask = torch.zeros(n, k_max, t_max, dtype=torch.bool)
    response_mask = torch.zeros(n, width, dtype=torch.bool)
    for b, where in enumerate(spans):
        for j, (start, length) in enumerate(where):
            token_index[b, j, :length] = torch.arange(b * width + start, b * width + start + length)
            token_mask[b, j, :length] = True
            response_mask[b, start : start + length] = True
    return PackedRewardBatch(input_ids, position_ids, attention_mask, response_mask, token_index, token_mask, n_truncated)
