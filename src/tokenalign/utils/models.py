"""Loading a language model and its tokenizer the same way in every command: a causal LM,
or a sequence-to-sequence LM (T5, BART) when its config is encoder-decoder."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from tokenalign.errors import TokenalignError
from tokenalign.utils.kernels import use_fast_kernels

__all__ = ["block_list", "load_causal_lm", "check_model_path", "looks_local", "lm_auto_class", "context_length", "forward_parameters", "is_encoder_decoder",
           "decoder_start_token_id", "sub_state_dict"]


# Heads that cannot generate text: a model saved with only these is not a policy.
_NON_GENERATIVE_HEADS = ("ForMaskedLM", "ForPreTraining", "ForSequenceClassification", "ForTokenClassification",
                         "ForQuestionAnswering", "ForMultipleChoice", "ForNextSentencePrediction")


def looks_local(path: str) -> bool:
    """A path rather than a hub id ("org/name"): absolute, relative with ./ or ../, under
    ~, or more than one folder deep."""
    return Path(path).is_absolute() or path.startswith((".", "~")) or path.count("/") > 1 or "\\" in path


def _offline_setting() -> str | None:
    """The variable that puts the Hugging Face hub offline (``HF_HUB_OFFLINE``, or transformers'
    ``TRANSFORMERS_OFFLINE``), when one is set truthy now or was when huggingface_hub loaded."""
    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        if os.environ.get(name, "").strip().upper() in ("1", "ON", "YES", "TRUE"):
            return name
    from huggingface_hub import constants

    return "HF_HUB_OFFLINE" if constants.HF_HUB_OFFLINE else None


def _in_hub_cache(repo_id: str) -> bool:
    """Whether the local Hugging Face cache holds the hub model ``repo_id``: its config.json
    (a LoRA adapter: adapter_config.json) at the ``main`` revision, as ``from_pretrained``
    looks it up offline."""
    from huggingface_hub import try_to_load_from_cache
    from huggingface_hub.errors import HFValidationError

    try:
        return any(isinstance(try_to_load_from_cache(repo_id, name), str) for name in ("config.json", "adapter_config.json"))
    except HFValidationError:  # not a valid hub id either: from_pretrained will say so
        return True


def check_model_path(path: str | Path) -> None:
    """Fail at once, in one line, for a model that cannot be a policy: a local path that
    does not exist (instead of minutes of hub retries), a hub id that is not in the local
    cache while the hub is offline (``HF_HUB_OFFLINE``), or a folder whose config records
    only heads that do not generate (a masked LM, a classifier)."""
    path = str(path)
    folder = Path(path).expanduser()
    if not folder.exists():
        if looks_local(path):
            raise TokenalignError(f"model folder '{path}' does not exist")
        offline = _offline_setting()
        if offline and not _in_hub_cache(path):
            raise TokenalignError(f"model '{path}' is not in the local Hugging Face cache and {offline} is set")
        return  # a hub id: from_pretrained resolves it (from the cache when offline)
    config = folder / "config.json"
    if config.is_file():
        architectures = json.loads(config.read_text(encoding="utf-8")).get("architectures") or []
        if architectures and all(a.endswith(_NON_GENERATIVE_HEADS) for a in architectures):
            raise TokenalignError(f"model '{path}' is a {', '.join(architectures)}, not a causal or sequence-to-sequence "
                                  "LM: a policy must generate text")


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


def ensure_pad_token(tokenizer):
    """The tokenizer, with EOS as its pad token when it has none (batches need one)."""
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_tokenizer(path, **kwargs):
    """``AutoTokenizer.from_pretrained(path, **kwargs)`` with a pad token (see :func:`ensure_pad_token`)."""
    from transformers import AutoTokenizer

    return ensure_pad_token(AutoTokenizer.from_pretrained(path, **kwargs))


def load_causal_lm(path: str):
    """A language model (in eval mode) and its tokenizer: a causal LM, or a seq2seq LM when
    its config is encoder-decoder (:func:`lm_auto_class`); pad = EOS when the tokenizer has
    no pad token. A missing or unreadable model is a one-line error naming it."""
    check_model_path(path)
    try:
        model = lm_auto_class(path).from_pretrained(path)
        tokenizer = load_tokenizer(path)
    except OSError as err:
        raise TokenalignError(f"cannot load model '{path}': {err}") from None
    use_fast_kernels(model)
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


def block_list(model) -> tuple[Any, str] | None:
    """(the module holding the model's list of transformer blocks, its attribute name):
    the longest ``ModuleList`` (``model.layers`` of a Llama, ``transformer.h`` of GPT-2,
    under any peft wrapper); None when it has none."""
    import torch

    best = None
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.ModuleList) and (best is None or len(module) > len(best[1])):
            best = (name, module)
    if best is None:
        return None
    parent, _, attr = best[0].rpartition(".")
    return (model.get_submodule(parent) if parent else model), attr


def sub_state_dict(state_dict: dict | None, prefix: str) -> dict | None:
    """The entries of a gathered state dict under ``prefix`` (a submodule's), the prefix cut;
    None when there is no state dict (the caller then uses the module's own)."""
    if state_dict is None:
        return None
    return {k[len(prefix):]: v for k, v in state_dict.items() if k.startswith(prefix)}
