"""Prompts for sampling: from any source, rendered for the policy, split for held-out evaluation.

A prompt is text, or a conversation in TRL's format (a list of ``{"role", "content"}``
messages), which the policy's chat template renders with the generation prompt, so the
model answers as the assistant. Held-out prompts come from their own source, a split of
a dataset, or a fixed random share of the training prompts.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tokenalign.data.loading import detect_file_format, load_prompts
from tokenalign.data.records import Messages
from tokenalign.errors import ConfigError, DataError

log = logging.getLogger(__name__)

__all__ = ["render_prompts", "train_and_eval_prompts", "describe_source"]


def describe_source(source: Any) -> str:
    """A short name of a prompt source for messages: the path or name, or its type."""
    return str(source) if isinstance(source, (str, Path)) else f"<{type(source).__name__}>"


def render_prompts(prompts: Sequence[str | Messages], tokenizer, model_name: str = "the policy") -> list[str]:
    """Each prompt as the text the policy is sampled from: text as it is; a conversation
    through the tokenizer's chat template with the generation prompt (the assistant's
    turn opened). A conversation for a tokenizer without a chat template is a one-line
    error."""
    if not any(isinstance(p, tuple) for p in prompts):
        return list(prompts)
    if not getattr(tokenizer, "chat_template", None):
        raise ConfigError(f"the prompts are chat messages, but the tokenizer of {model_name} has no chat template: "
                          "give text prompts, or a model whose tokenizer has one")
    out = []
    for p in prompts:
        if isinstance(p, str):
            out.append(p)
        else:
            messages = [{"role": m.role, "content": m.content} for m in p]
            out.append(tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True))
    return out


def _has_splits(source: Any) -> bool:
    return isinstance(source, (str, Path)) and detect_file_format(str(source)) in ("dataset", "hub")


def train_and_eval_prompts(
    source: Any,
    eval_source: Any = None,
    *,
    split: str = "train",
    eval_split: str = "test",
    n_eval: int = 64,
    seed: int = 0,
) -> tuple[list[str | Messages], list[str | Messages]]:
    """The training prompts of ``source`` and at most ``n_eval`` held-out prompts.

    Held-out prompts come from ``eval_source`` when given; else from the ``eval_split``
    split when ``source`` is a dataset that has it; else ``min(n_eval, len // 5)`` prompts
    drawn at random (``seed``) are held out of training, so the evaluation never scores
    prompts the policy trained on. ``n_eval`` 0 means all.
    """
    train = load_prompts(source, split)
    if eval_source is not None and eval_source != "":
        held = load_prompts(eval_source, eval_split)
    else:
        held = _split_if_any(source, eval_split)
    if held is None:
        train, held = _hold_out(train, n_eval, seed, describe_source(source))
    return train, held[:n_eval] if n_eval else held


def _hold_out(prompts: list, n_eval: int, seed: int, name: str) -> tuple[list, list]:
    """``min(n_eval, len // 5)`` prompts drawn at random (``seed``) out of ``prompts``:
    (the rest, in order; the held-out ones, in order)."""
    n_hold = min(n_eval or len(prompts), len(prompts) // 5)
    if n_hold == 0:
        raise ConfigError(f"{name} has {len(prompts)} prompts: too few to hold any out for evaluation "
                          "(at least 5); give held-out prompts (eval_prompts)")
    order = list(range(len(prompts)))
    random.Random(seed).shuffle(order)
    out = set(order[:n_hold])
    log.info("holding out %d of %d prompts of %s for evaluation (no eval_prompts given)", n_hold, len(prompts), name)
    return [p for i, p in enumerate(prompts) if i not in out], [prompts[i] for i in sorted(out)]


def _split_if_any(source: Any, split: str) -> list | None:
    """The prompts of ``split`` of a dataset source that has it; None for a file or a
    dataset without that split."""
    if not _has_splits(source):
        return None
    try:
        return load_prompts(source, split)
    except DataError as err:
        if "has no split" in err.message:
            return None
        raise
