"""Sampling from a conditionally trained model (PHF conditional training, SPEC 3.4).

A model trained with ``<|good|>`` / ``<|bad|>`` before its segments is sampled from
``<|good|>``: the prompt's segments are prefixed with ``<|good|>`` exactly as in training
(each segment tokenised on its own), ``<|bad|>`` can never be generated, and for code
``<|good|>`` is forced after every token that ends a line and blocked elsewhere, so the
sample is drawn from p(y | every line is good). Text blocks both control tokens.

Generated control tokens are not part of the completion: samples carry the plain ids
(what the reference model scores) and, in ``Sample.conditioned_ids``, the ids the
conditioned model saw, for its own log-probs.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Literal

import torch

__all__ = ["GOOD_TOKEN", "BAD_TOKEN", "Conditioning"]

GOOD_TOKEN = "<|good|>"
BAD_TOKEN = "<|bad|>"
CONFIG_KEY = "tokenalign_conditioning"


@dataclasses.dataclass
class Conditioning:
    """How to prompt and constrain a model trained with control tokens."""

    good_id: int
    bad_id: int
    segment: Literal["line", "sentence"] = "line"
    newline_ids: frozenset[int] | None = None  # code: <|good|> forced after these tokens
    blocked_ids: frozenset[int] = frozenset()  # code: tokens that merge a newline with what follows

    @property
    def control_ids(self) -> frozenset[int]:
        return frozenset((self.good_id, self.bad_id))

    @classmethod
    def from_tokenizer(cls, tokenizer, segment: Literal["line", "sentence"] = "line") -> "Conditioning | None":
        """The conditioning of a tokenizer that has both control tokens (None otherwise)."""
        from tokenalign.policy.phf import multiline_token_ids, newline_token_ids

        vocab = tokenizer.get_vocab()
        if GOOD_TOKEN not in vocab or BAD_TOKEN not in vocab:
            return None
        if segment != "line":
            return cls(vocab[GOOD_TOKEN], vocab[BAD_TOKEN], segment)
        # Training tokenised each line on its own, so a token spanning a line break (such as
        # "\n" + indentation) never followed a control token: block it, or lines would
        # start without <|good|>.
        return cls(vocab[GOOD_TOKEN], vocab[BAD_TOKEN], segment, frozenset(newline_token_ids(tokenizer)),
                   frozenset(multiline_token_ids(tokenizer)))

    @classmethod
    def for_model(cls, model, tokenizer) -> "Conditioning | None":
        """The conditioning a saved model was trained with (its config records the segment
        kind, ``tokenalign_conditioning``; line by default)."""
        return cls.from_tokenizer(tokenizer, getattr(model.config, CONFIG_KEY, "line"))

    def mark(self, model) -> None:
        """Record the segment kind in the model's config (saved with it)."""
        setattr(model.config, CONFIG_KEY, self.segment)

    def encode_prompt(self, tokenizer, prompt: str) -> list[int]:
        """The prompt as in training: each segment on its own, after ``<|good|>``."""
        from tokenalign.data.segments import split_segments

        if not prompt:
            bos = tokenizer.bos_token or tokenizer.eos_token
            return tokenizer(bos, add_special_tokens=False)["input_ids"] + [self.good_id]
        ids: list[int] = []
        for start, end in split_segments(prompt, self.segment):
            ids.append(self.good_id)
            ids += tokenizer(prompt[start:end], add_special_tokens=False)["input_ids"]
        if self.segment == "line" and prompt.endswith("\n"):
            ids.append(self.good_id)  # the next line starts here, as forced during sampling
        return ids

    def logits_processor(self):
        from tokenalign.policy.phf import ControlTokenProcessor

        newlines = set(self.newline_ids) if self.newline_ids is not None else None
        return ControlTokenProcessor(self.good_id, self.bad_id, newlines, blocked_ids=tuple(self.blocked_ids))

    def stopping_criterion(self, limit: int, prompt_width: int):
        """Stops a row once it has ``limit`` plain tokens: forced control tokens do not
        count against ``max_new_tokens``, so conditioned samples get the same length budget."""
        control = torch.tensor(sorted(self.control_ids), dtype=torch.long)

        def done(input_ids: torch.Tensor, scores: torch.Tensor, **kwargs) -> torch.Tensor:
            generated = input_ids[:, prompt_width:]
            plain = (~torch.isin(generated, control.to(generated.device))).sum(dim=1)
            return plain >= limit

        return done

    def strip(self, ids: Sequence[int]) -> list[int]:
        control = self.control_ids
        return [i for i in ids if i not in control]

    def raw_prefix(self, raw: Sequence[int], n_plain: int) -> list[int]:
        """The shortest prefix of ``raw`` holding ``n_plain`` non-control tokens (and the
        control tokens before them)."""
        control, seen = self.control_ids, 0
        for k, token in enumerate(raw):
            if seen == n_plain:
                return list(raw[:k])
            seen += token not in control
        return list(raw)
