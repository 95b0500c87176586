"""Loading a language model and its tokenizer the same way in every command: a causal LM,
or a sequence-to-sequence LM (T5, BART) when its config is encoder-decoder."""

from __future__ import annotations

import json
from pathlib import Path

from tokenalign.errors import TokenalignError

__all__ = ["load_causal_lm", "lm_auto_class", "context_length", "forward_parameters", "is_encoder_decoder",
           "decoder_start_token_id", "fuse_activations", "fused_optimizer_kwargs"]


def lm_auto_class(path: str | Path):
    """The Auto class that loads the LM at ``path``: ``AutoModelForSeq2SeqLM`` when its config
    is encoder-decoder, ``AutoModelForCausalLM`` otherwise. A LoRA adapter folder (peft's
    ``adapter_config.json``, no ``config.json``) is judged by its base model's config; a
    config that cannot be read here is left to the causal class (and its error message)."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSeq2SeqLM

    adapter = Path(path) / "adapter_config.json"
    if not (Path(path) / "config.json").is_file() and adapter.is_file():
        base = json.loads(adapter.read_text()).get("base_model_name_or_path")
        return lm_auto_class(base) if base else AutoModelForCausalLM
    try:
        config = AutoConfig.from_pretrained(str(path))
    except (OSError, ValueError):
        return AutoModelForCausalLM
    return AutoModelForSeq2SeqLM if getattr(config, "is_encoder_decoder", False) else AutoModelForCausalLM


def load_causal_lm(path: str):
    """A language model (in eval mode) and its tokenizer: a causal LM, or a seq2seq LM when
    its config is encoder-decoder (:func:`lm_auto_class`); pad = EOS when the tokenizer has
    no pad token. A missing or unreadable model is a one-line error naming it."""
    from transformers import AutoTokenizer

    try:
        model = lm_auto_class(path).from_pretrained(path)
        tokenizer = AutoTokenizer.from_pretrained(path)
    except OSError as err:
        raise TokenalignError(f"cannot load model '{path}': {err}") from None
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    fuse_activations(model)
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


def fuse_activations(model) -> int:
    """Swap tanh-approximate GELUs written as Python arithmetic (GPT-2's ``gelu_new``: seven
    element-wise kernels forward, more backward, each a pass over the MLP's activations) for
    the same function as one fused kernel (transformers' ``GELUTanh``, ``F.gelu(approximate=
    "tanh")``; equal within float rounding, ~5e-7). About 12% off the pep8 model's training
    step on a CPU. The saved config is untouched. Returns how many modules were swapped."""
    from transformers.activations import FastGELUActivation, GELUTanh, NewGELUActivation

    swapped = 0
    for module in model.modules():
        for name, child in list(module.named_children()):
            if type(child) in (NewGELUActivation, FastGELUActivation):
                setattr(module, name, GELUTanh())
                swapped += 1
    return swapped


def fused_optimizer_kwargs(device) -> dict:
    """``{"fused": True}`` where torch has fused Adam/AdamW kernels for ``device`` (CPU and
    CUDA): one kernel over all parameters instead of a Python loop of element-wise ops per
    tensor (the pep8 model's AdamW step: 19 ms instead of 74 on a CPU). The same update."""
    import torch

    return {"fused": True} if torch.device(device).type in ("cpu", "cuda") else {}

def _inner(model):
    """The model inside a DDP wrapper (``.module``), or ``model`` itself."""
    return getattr(model, "module", model)


def is_encoder_decoder(model) -> bool:
    """Whether ``model`` (or the model inside a DDP / PEFT wrapper) is an encoder-decoder:
    the prompt goes to its encoder, the response to its decoder."""
    return bool(getattr(getattr(_inner(model), "config", None), "is_encoder_decoder", False))


def decoder_start_token_id(model) -> int:
    """The token an encoder-decoder's decoder starts from, as ``model.generate`` picks it:
    the generation config's, else the model config's."""
    inner = _inner(model)
    for source in (getattr(inner, "generation_config", None), getattr(inner, "config", None)):
        value = getattr(source, "decoder_start_token_id", None)
        if value is not None:
            return int(value)
    raise TokenalignError("an encoder-decoder model needs decoder_start_token_id in its config")
