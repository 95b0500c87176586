"""Sampling from a conditionally trained model (PHF conditional training, Korbak et al.,
ICML 2023).

A model trained with ``<|good|>`` / ``<|bad|>`` before its segments is sampled from
``<|good|>``: the prompt gets the control tokens it would have had in training (all
``<|good|>``, the model's own tokenisation kept), ``<|bad|>`` can never be generated, and
for code the model places ``<|good|>`` before each line itself, as it learned to (PHF:
block ``<|bad|>``; for text both control tokens are blocked). Blocking uses transformers'
``SuppressTokensLogitsProcessor``.

Generated control tokens are not part of the completion: samples carry the plain ids and
text (what the reference and the scorer see) and, in ``Sample.conditioned_ids``, the ids
the conditioned model saw, for its own log-probs.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Sequence
from typing import Literal

import torch

__all__ = ["GOOD_TOKEN", "BAD_TOKEN", "CONFIG_KEY", "Conditioning"]

GOOD_TOKEN = "<|good|>"
BAD_TOKEN = "<|bad|>"
CONFIG_KEY = "tokenalign_conditioning"


@dataclasses.dataclass
class Conditioning:
    """How to prompt and constrain a model trained with control tokens."""

    good_id: int
    bad_id: int
    segment: Literal["line", "sentence"] = "line"

    @property
    def control_ids(self) -> frozenset[int]:
        return frozenset((self.good_id, self.bad_id))

    @property
    def suppressed_ids(self) -> frozenset[int]:
        """Never generated: ``<|bad|>``; for text (sentences) ``<|good|>`` too."""
        return frozenset((self.bad_id,)) if self.segment == "line" else self.control_ids

    @classmethod
    def from_tokenizer(cls, tokenizer, segment: Literal["line", "sentence"] = "line") -> "Conditioning | None":
        """The conditioning of a tokenizer that has both control tokens (None otherwise)."""
        vocab = tokenizer.get_vocab()
        if GOOD_TOKEN not in vocab or BAD_TOKEN not in vocab:
            return None
        return cls(vocab[GOOD_TOKEN], vocab[BAD_TOKEN], segment)

    @classmethod
    def for_model(cls, model, tokenizer) -> "Conditioning | None":
        """The conditioning a saved model was trained with (its config records the segment
        kind, ``tokenalign_conditioning``; line by default)."""
        return cls.from_tokenizer(tokenizer, getattr(model.config, CONFIG_KEY, "line"))

    def mark(self, model) -> None:
        """Record the segment kind in the model's config (saved with it)."""
        setattr(model.config, CONFIG_KEY, self.segment)

    def encode_prompt(self, tokenizer, prompt: str) -> list[int]:
        """The prompt as in training, every segment marked good (the model's own tokens)."""
        from tokenalign.data.segments import split_segments
        from tokenalign.objectives.phf_math import conditional_token_ids

        if not prompt:
            bos = tokenizer.bos_token or tokenizer.eos_token
            return tokenizer(bos, add_special_tokens=False)["input_ids"] + [self.good_id]
        segments = [(s, e, 0.0) for s, e in split_segments(prompt, self.segment)]
        ids = conditional_token_ids(tokenizer, prompt, segments, 0.0, 0.0, self.good_id, self.bad_id, random.Random(0))
        if self.segment == "line" and prompt.endswith("\n"):
            ids.append(self.good_id)  # the next line starts here
        return ids

    def logits_processor(self):
        from transformers import SuppressTokensLogitsProcessor

        return SuppressTokensLogitsProcessor(sorted(self.suppressed_ids))

    def stopping_criterion(self, limit: int, prompt_width: int):
        """Stops a row once it has ``limit`` plain tokens: control tokens do not count
        against ``max_new_tokens``, so conditioned samples get the same length budget."""
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
