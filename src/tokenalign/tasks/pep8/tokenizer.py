"""A byte-level BPE tokenizer for Python code, trained on the corpus's train split.

Byte-level BPE round-trips any text exactly (indentation, unicode); runs of spaces are
merged into single tokens, so indentation levels cost one token each.
"""

from __future__ import annotations

from collections.abc import Iterable

EOS = "<|endoftext|>"
PAD = "<|pad|>"

__all__ = ["EOS", "PAD", "train_tokenizer"]


def train_tokenizer(texts: Iterable[str], vocab_size: int = 4096):
    """Train a byte-level BPE on ``texts``; returns a transformers fast tokenizer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    # No regex split on spaces: let BPE learn indentation runs and common code tokens.
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOS, PAD],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=EOS, eos_token=EOS, pad_token=PAD)
