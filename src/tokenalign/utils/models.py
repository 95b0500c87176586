"""Loading a causal LM and its tokenizer the same way in every command."""

from __future__ import annotations

from tokenalign.errors import TokenalignError

__all__ = ["load_causal_lm"]


def load_causal_lm(path: str):
    """A causal LM (in eval mode) and its tokenizer; pad = EOS when the tokenizer has no pad
    token. A missing or unreadable model is a one-line error naming it."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        model = AutoModelForCausalLM.from_pretrained(path)
        tokenizer = AutoTokenizer.from_pretrained(path)
    except OSError as err:
        raise TokenalignError(f"cannot load model '{path}': {err}") from None
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model.eval(), tokenizer
