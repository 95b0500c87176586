"""Sampled responses as padded tensors, and the per-token log-probs of an LM on them.

Layout of a batch (one row per sample)::

    [pad pad p p p | r r r r pad]
     <- prompt_width -><- response_width ->

Prompts are left-padded to a shared width, responses right-padded, so that every response
token ``t`` sits at column ``prompt_width + t`` and its log-prob comes from the logits at
the column before. Position ids follow the attention mask (a left-padded row starts at
position 0 at its first real token), which is what the model saw while sampling with
the KV cache; getting this wrong costs GPT-2 about 0.2 nats per token (measured on a peer library).

An encoder-decoder (T5, BART) reads the same batch differently
(:func:`encoder_decoder_inputs`): its encoder reads the prompt columns, its decoder the
decoder start token followed by the response, so decoder position ``t`` predicts response
token ``t``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import torch

from typing import Any

from tokenalign.utils.models import decoder_start_token_id, forward_parameters, is_encoder_decoder

__all__ = ["TokenBatch", "Rollout", "build_token_batch", "position_ids", "left_aligned", "encoder_decoder_inputs", "token_logprobs",
           "response_char_spans"]


@dataclasses.dataclass
class TokenBatch:
    """Prompt + response token ids of a batch of samples, padded (see the module layout)."""

    input_ids: torch.Tensor  # [B, P + R] long
    attention_mask: torch.Tensor  # [B, P + R] long
    response_mask: torch.Tensor  # [B, R] bool: real response tokens
    prompt_width: int

    @property
    def response_ids(self) -> torch.Tensor:
        return self.input_ids[:, self.prompt_width :]

    def to(self, device: torch.device | str) -> "TokenBatch":
        return TokenBatch(self.input_ids.to(device), self.attention_mask.to(device), self.response_mask.to(device), self.prompt_width)

    def rows(self, index: torch.Tensor | Sequence[int]) -> "TokenBatch":
        """A sub-batch (minibatch) of rows; padding columns are kept."""
        idx = torch.as_tensor(index, dtype=torch.long, device=self.input_ids.device)
        return TokenBatch(self.input_ids[idx], self.attention_mask[idx], self.response_mask[idx], self.prompt_width)

    def trimmed(self) -> tuple["TokenBatch", int]:
        """The batch without the columns that are padding in every row (the leading prompt
        columns that only longer prompts of the full batch needed, the trailing response
        columns), and the response width kept. No real token's log-prob changes: positions
        follow the attention mask. On a minibatch of similar prompts this drops a large
        share of the compute (the pep8 rollouts' prompts are 18-27 tokens on average, the
        longest up to 93)."""
        width = max(int(self.response_mask.sum(dim=1).max()), 1) if self.response_mask.numel() else 1
        cut = self.prompt_width + width
        # A row's prompt mask is 0...0 1...1 (at least one real token): argmax is its first real column.
        lead = int(self.attention_mask[:, : self.prompt_width].argmax(dim=1).min()) if self.input_ids.shape[0] else 0
        return TokenBatch(self.input_ids[:, lead:cut], self.attention_mask[:, lead:cut], self.response_mask[:, :width],
                          self.prompt_width - lead), width


def build_token_batch(prompt_ids: Sequence[Sequence[int]], response_ids: Sequence[Sequence[int]], pad_id: int) -> TokenBatch:
    """Pad prompts left and responses right (at least one response column)."""
    if len(prompt_ids) != len(response_ids):
        raise ValueError(f"{len(prompt_ids)} prompts but {len(response_ids)} responses")
    if any(len(p) == 0 for p in prompt_ids):
        raise ValueError("every prompt needs at least one token (use BOS for unconditional samples)")
    b = len(prompt_ids)
    p_width = max(len(p) for p in prompt_ids)
    r_width = max([len(r) for r in response_ids] + [1])
    input_ids = torch.full((b, p_width + r_width), pad_id, dtype=torch.long)
    attention = torch.zeros((b, p_width + r_width), dtype=torch.long)
    response_mask = torch.zeros((b, r_width), dtype=torch.bool)
    for i, (p, r) in enumerate(zip(prompt_ids, response_ids)):
        input_ids[i, p_width - len(p) : p_width] = torch.as_tensor(list(p), dtype=torch.long)
        attention[i, p_width - len(p) : p_width + len(r)] = 1
        if len(r):
            input_ids[i, p_width : p_width + len(r)] = torch.as_tensor(list(r), dtype=torch.long)
            response_mask[i, : len(r)] = True
    return TokenBatch(input_ids, attention, response_mask, p_width)


def position_ids(attention_mask: torch.Tensor) -> torch.Tensor:
    """Positions counted over real tokens only (0 at each row's first real token)."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


def left_aligned(ids: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-padded rows with their padding moved to the end (each row rotated by its number
    of padding columns): an encoder reads its input this way, so that models with absolute
    positions (BART) see each prompt from position 0, as a lone prompt."""
    width = ids.shape[1]
    lead = width - mask.long().sum(dim=1, keepdim=True)
    index = (torch.arange(width, device=ids.device) + lead) % width
    return ids.gather(1, index), mask.gather(1, index)


def encoder_decoder_inputs(batch: TokenBatch, start_id: int) -> dict[str, torch.Tensor]:
    """An encoder-decoder's forward arguments for ``batch``: the encoder reads the prompt
    (padding at the end, as the sampler fed it), the decoder ``start_id`` and then the
    response without its last token, so that decoder position ``t`` predicts response token
    ``t`` (what ``labels=response`` makes the model do itself)."""
    p = batch.prompt_width
    enc_ids, enc_mask = left_aligned(batch.input_ids[:, :p], batch.attention_mask[:, :p])
    response = batch.response_ids
    start = response.new_full((response.shape[0], 1), start_id)
    return {
        "input_ids": enc_ids,
        "attention_mask": enc_mask,
        "decoder_input_ids": torch.cat([start, response[:, :-1]], dim=1),
        "decoder_attention_mask": torch.cat([torch.ones_like(start), batch.response_mask[:, :-1].long()], dim=1),
    }


def token_logprobs(
    model,
    batch: TokenBatch,
    with_entropy: bool = False,
    with_hidden: bool = False,
    temperature: float = 1.0,
    exclude_ids: Sequence[int] = (),
    trunk=None,
) -> dict[str, torch.Tensor]:
    """Log-prob of each response token under ``model``: ``{"logprobs": [B, R]}``, plus
    ``"neg_entropy"`` (Σ_a π(a|s) log π(a|s) per response position) and ``"hidden"`` (the
    last hidden state at the response positions' inputs) when asked.

    ``temperature`` divides the logits first: the log-probs of the distribution that was
    actually sampled from (top-k / top-p truncation is not modelled; train with them off).
    ``exclude_ids`` get no probability mass (the distribution of a sampler that blocks them).
    Runs with whatever grad mode and autocast the caller set. Only the response columns'
    logits are normalised, in fp32, so memory is B x R x V rather than B x (P + R) x V.
    An encoder-decoder model reads the batch as :func:`encoder_decoder_inputs` says.
    ``trunk`` (``tokenalign.policy.trunk.Trunk``): the states its frozen lower blocks gave on
    this batch, so that only the blocks above run.
    """
    p = batch.prompt_width
    if is_encoder_decoder(model):
        out = model(**encoder_decoder_inputs(batch, decoder_start_token_id(model)), use_cache=False,
                    output_hidden_states=with_hidden)
        logits = out.logits.float()  # decoder position t: response token t
        hidden = out.decoder_hidden_states[-1] if with_hidden else None
    else:
        # Only the response columns' logits are needed: models that can skip the LM head
        # elsewhere (``logits_to_keep``) compute the last R + 1 positions only.
        keep = {"logits_to_keep": batch.input_ids.shape[1] - p + 1} if "logits_to_keep" in forward_parameters(model) else {}
        kwargs = {"use_cache": False, "output_hidden_states": with_hidden, **keep}
        if trunk is not None:
            out = trunk.forward(model, batch, **kwargs)
        else:
            out = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                        position_ids=position_ids(batch.attention_mask), **kwargs)
        logits = out.logits[:, -(batch.input_ids.shape[1] - p + 1) : -1].float()
        hidden = out.hidden_states[-1][:, p - 1 : -1] if with_hidden else None
    if temperature != 1.0:
        logits = logits / temperature
    if len(exclude_ids):
        logits = logits.index_fill(-1, torch.as_tensor(list(exclude_ids), dtype=torch.long, device=logits.device), -torch.inf)
    logp_all = torch.log_softmax(logits, dim=-1)
    result = {"logprobs": logp_all.gather(-1, batch.response_ids.unsqueeze(-1)).squeeze(-1)}
    if with_entropy:
        result["neg_entropy"] = (logp_all.exp() * logp_all).sum(-1)
    if with_hidden:
        result["hidden"] = hidden
    return result


def response_char_spans(tokenizer, ids: Sequence[int], text_length: int | None = None,
                        skip: int = 0) -> list[tuple[int, int]]:
    """Character span of each token in ``tokenizer.decode(ids)[skip:]``.

    Tokens past ``text_length`` (e.g. the tokens that spelled a stop string after the
    scored text ends) get the empty span ``(text_length, text_length)``. ``skip``: decoded
    characters before the text (a healed sample's ``Sample.healed``, prompt text its first
    token re-spells), counted in the first token's span, which then starts at 0.
    """
    pieces = [tokenizer.decode([i]) for i in ids]
    full = tokenizer.decode(list(ids))
    if sum(len(x) for x in pieces) == len(full):
        ends = torch.tensor([len(x) for x in pieces]).cumsum(0).tolist()
    else:  # multi-byte characters split across tokens: decode prefixes instead
        ends = [len(tokenizer.decode(list(ids[: k + 1]))) for k in range(len(ids))]
    if skip:
        ends = [max(e - skip, 0) for e in ends]
    spans, start = [], 0
    for end in ends:
        spans.append((min(start, end), end))
        start = end
    if text_length is not None:
        spans = [(min(s, text_length), min(e, text_length)) for s, e in spans]
    return spans


@dataclasses.dataclass
class Rollout:
    """Everything one policy update needs, computed once per rollout (tensors on the device)."""

    samples: list  # the Sample of each row
    batch: TokenBatch
    logprobs: torch.Tensor  # [B, R] behaviour policy
    ref_logprobs: torch.Tensor  # [B, R]
    rewards: torch.Tensor  # [B, R] placed rewards, before the KL penalty
    scores: torch.Tensor  # [B] sequence scores
    token_rewards: torch.Tensor | None  # [B, R] the source's per-token rewards, if any
    values: torch.Tensor | None  # [B, R] PPO values
    details: list[Any]
    extra: dict[str, torch.Tensor] = dataclasses.field(default_factory=dict)  # objective-specific tensors
    # the frozen lower blocks' states on ``batch`` of the policy, the value model and the reference
    # (``PolicyTrainer.trunks``; None: not kept): computed for the rollout's passes, reused by the
    # update, which releases them
    trunks: Any = None
