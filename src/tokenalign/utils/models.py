"""Loading a causal LM and its tokenizer the same way in every command."""

from __future__ import annotations

from tokenalign.errors import TokenalignError

__all__ = ["load_causal_lm", "context_length", "forward_parameters"]


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


def context_length(config) -> int | None:
    """The most positions a model with this config can read (None when it has no fixed limit)."""
    for name in ("n_positions", "max_position_embeddings"):
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def forward_parameters(model) -> set[str]:
    """The keyword arguments ``model``'s forward takes, seen through the wrappers that pass
    them on: DDP (``.module``) and PEFT (whose ``**kwargs`` reach the base model). Used to
    ask whether a model takes ``position_ids``, a KV cache or ``logits_to_keep``."""
    import inspect

    inner = getattr(model, "module", model)
    try:
        names = set(inspect.signature(inner.forward).parameters)
    except (TypeError, ValueError, AttributeError):
        return set()
    base = getattr(inner, "get_base_model", None)
    if callable(base):
        names |= forward_parameters(base())
    return names
