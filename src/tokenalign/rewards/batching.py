"""Turn (prompt, response) texts into reward-model batches, keeping response token spans.

Prompt and response are tokenized separately and concatenated — exactly how a policy
produces a response after its prompt — so a token reward always belongs to one response
token whose character span in the response is known (for heatmaps and blame).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import torch

from tokenalign.data.truncation import truncate_pair

__all__ = ["RewardBatch", "encode_for_reward"]


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


def _pad(rows: Sequence[Sequence[int]], value: int) -> torch.Tensor:
    width = max((len(r) for r in rows), default=0)
    out = torch.full((len(rows), max(width, 1)), value, dtype=torch.long)
    for i, row in enumerate(rows):
        out[i, : len(row)] = torch.tensor(row, dtype=torch.long)
    return out


def encode_for_reward(
    tokenizer,
    prompts: Sequence[str],
    responses: Sequence[str],
    *,
    is_encoder_decoder: bool = False,
    max_length: int | None = None,
    max_prompt_length: int | None = None,
    decoder_start_token_id: int | None = None,
) -> RewardBatch:
    """Tokenize and right-pad a batch. Over-long inputs keep the prompt's tail and cut the
    response's end (counted in ``n_truncated``, never dropped)."""
    if len(prompts) != len(responses):
        raise ValueError(f"{len(prompts)} prompts but {len(responses)} responses")
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    if pad_id is None:
        raise ValueError("the tokenizer has neither a pad nor an eos token")
    p_enc = tokenizer(list(prompts), add_special_tokens=True)["input_ids"]
    r_enc = tokenizer(list(responses), add_special_tokens=False, return_offsets_mapping=True)
    inputs, resp_ids, resp_spans, n_truncated = [], [], [], 0
    for p_ids, r_ids, r_off in zip(p_enc, r_enc["input_ids"], r_enc["offset_mapping"]):
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
