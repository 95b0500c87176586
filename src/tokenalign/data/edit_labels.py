"""Token labels from a minimal edit (Xu et al., ACL 2024; TLCR, Yoon et al.).

The diff is taken over *characters* (difflib, no autojunk), which is robust to
re-tokenization at edit boundaries; changed character ranges are then mapped to tokens
through the tokenizer's offsets: a token is changed when any of its characters is.

- original tokens deleted or replaced -> BAD (0.0)
- edited tokens inserted or replaced  -> GOOD (1.0)
- a pure insertion also marks the original token(s) touching the insertion point BAD
  (``mark_insertion_neighbours``): the insertion says something was missing *there*
  (e.g. ``x=1`` -> ``x = 1`` blames ``=``'s neighbourhood in the original);
  a pure deletion marks nothing on the edited side.
- unchanged tokens: ``ignore`` (label -100, excluded from the loss; default, as TLCR) or
  ``neutral`` (label ``neutral_value``).
Labels cover response tokens only (tokenized alone, without special tokens, exactly as
reward models read responses after their prompt); prompts are never labelled.
"""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Sequence
from typing import Literal

import numpy as np

__all__ = ["BAD", "GOOD", "IGNORE", "EditLabelConfig", "TokenLabels", "changed_char_spans", "edit_labels", "spans_to_token_mask"]

BAD, GOOD, IGNORE = 0.0, 1.0, -100.0


@dataclasses.dataclass
class EditLabelConfig:
    unchanged: Literal["ignore", "neutral"] = "ignore"
    neutral_value: float = 0.5
    mark_insertion_neighbours: bool = True


@dataclasses.dataclass
class TokenLabels:
    """Response tokens, their character spans and one label each."""

    text: str
    input_ids: list[int]
    offsets: list[tuple[int, int]]
    labels: list[float]

    @property
    def n_changed(self) -> int:
        return sum(1 for x in self.labels if x in (BAD, GOOD))


def changed_char_spans(original: str, edited: str, mark_insertion_neighbours: bool = True) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    """Changed character spans of each side: (original's, edited's)."""
    matcher = difflib.SequenceMatcher(None, original, edited, autojunk=False)
    bad, good = [], []
    for op, i1, i2, j1, j2 in matcher.get_opcodes():
        if op in ("replace", "delete"):
            bad.append((i1, i2))
        if op in ("replace", "insert"):
            good.append((j1, j2))
        if op == "insert" and mark_insertion_neighbours and original:
            # The characters on both sides of the insertion point.
            bad.append((max(i1 - 1, 0), min(i1 + 1, len(original))))
    return bad, good


def spans_to_token_mask(spans: Sequence[tuple[int, int]], offsets: Sequence[tuple[int, int]], n_chars: int) -> np.ndarray:
    """Boolean per token: does its character span overlap any of ``spans``?

    A span that no token covers (whitespace, for tokenizers that drop it) marks the tokens
    on both sides of it instead, so an inserted space still labels its neighbours.
    """
    off = np.asarray(offsets, dtype=np.int64).reshape(-1, 2)
    starts = np.clip(off[:, 0], 0, n_chars)
    ends = np.clip(np.maximum(off[:, 1], off[:, 0] + 1), 0, n_chars)  # a zero-width piece of a multi-byte char
    hit = np.zeros(len(off), dtype=bool)
    for s, e in spans:
        overlap = (starts < e) & (ends > s)
        if not overlap.any():
            overlap = (starts < e + 1) & (ends > s - 1)
        hit |= overlap
    return hit


def _label(text: str, spans: list[tuple[int, int]], value: float, tokenizer, cfg: EditLabelConfig) -> TokenLabels:
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    offsets = [tuple(o) for o in enc["offset_mapping"]]
    changed = spans_to_token_mask(spans, offsets, len(text))
    rest = IGNORE if cfg.unchanged == "ignore" else cfg.neutral_value
    labels = np.where(changed, value, rest).astype(float).tolist()
    return TokenLabels(text, list(enc["input_ids"]), offsets, labels)


def edit_labels(original: str, edited: str, tokenizer, config: EditLabelConfig | None = None) -> tuple[TokenLabels, TokenLabels]:
    """Per-token labels of the original (BAD where changed) and of the edit (GOOD where changed).

    ``tokenizer`` must be a fast tokenizer (it needs offsets).
    """
    cfg = config or EditLabelConfig()
    if not getattr(tokenizer, "is_fast", False):
        raise ValueError("edit labels need a fast tokenizer (offset mapping)")
    bad_spans, good_spans = changed_char_spans(original, edited, cfg.mark_insertion_neighbours)
    return _label(original, bad_spans, BAD, tokenizer, cfg), _label(edited, good_spans, GOOD, tokenizer, cfg)
