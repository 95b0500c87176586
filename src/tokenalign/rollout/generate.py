"""Batched sampling from any Hugging Face causal LM, with the KV cache.

Prompts are left-padded (the attention mask drives position ids), sampled in batches with
``model.generate`` in eval mode without gradients, and each completion is cut at the first
stop string; its token ids are cut to match, so text and ids always agree.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence

import torch

log = logging.getLogger(__name__)

__all__ = ["SamplingConfig", "Sample", "encode_prompt", "first_stop", "generate"]


@dataclasses.dataclass
class SamplingConfig:
    """Sampling settings (SPEC 3.4 evaluation defaults: temperature 0.7, top-p 0.9).

    ``top_k=0`` and ``top_p=1.0`` switch those filters off; ``greedy`` (or temperature 0)
    decodes greedily. Sampling runs in the model's own dtype: bf16 autocast was measured
    slower than fp32 for the pep8 base model on this CPU (543 vs 859 tokens/s).
    """

    max_new_tokens: int = 128
    temperature: float = 0.7
    top_k: int = 0
    top_p: float = 0.9
    batch_size: int = 32
    stop: list[str] = dataclasses.field(default_factory=list)
    seed: int = 0
    greedy: bool = False


@dataclasses.dataclass
class Sample:
    """One completion of one prompt."""

    prompt: str
    completion: str
    completion_ids: list[int]
    finished: bool  # ended by EOS or a stop string, not by the length limit
    # What the policy emitted, for training on it: the completion's ids plus the tokens that
    # ended it (the EOS token, or the tokens that spelled a stop string), so that the choice
    # to stop is learned too. ``completion_ids`` is always a prefix of it.
    generated_ids: list[int] = dataclasses.field(default_factory=list)
    prompt_ids: list[int] = dataclasses.field(default_factory=list)
    # A conditionally trained model's view (``tokenalign.policy.conditioning``): its prompt
    # ids and generated ids with the control tokens; None for plain sampling.
    conditioned_ids: tuple[list[int], list[int]] | None = None


class _StopOnStrings:
    """Per-row stopping when a stop string appears in the *generated* text.

    (transformers' own ``stop_strings`` also matches across the prompt boundary: a prompt
    ending in a newline would stop on a first generated "def ".) Only the last few
    generated tokens are decoded at each step, so the check is cheap.
    """

    def __init__(self, tokenizer, stops: Sequence[str], prompt_width: int, window: int = 12) -> None:
        self.tokenizer, self.stops, self.start, self.window = tokenizer, list(stops), prompt_width, window

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor, **kwargs) -> torch.Tensor:
        # Special tokens (EOS, a conditioned model's control tokens) are not text.
        tails = self.tokenizer.batch_decode(input_ids[:, self.start :][:, -self.window :], skip_special_tokens=True)
        done = [any(s in t for s in self.stops) for t in tails]
        return torch.tensor(done, dtype=torch.bool, device=input_ids.device)


def first_stop(text: str, stops: Sequence[str]) -> int:
    """Where the earliest stop string starts in ``text`` (-1 when none occurs)."""
    return min((i for i in (text.find(s) for s in stops) if i >= 0), default=-1)


def _cut_at_stop(tokenizer, ids: list[int], text: str, stops: Sequence[str]) -> tuple[list[int], str, bool]:
    cut = first_stop(text, stops)
    if cut < 0:
        return ids, text, False
    k = len(ids)
    while k > 0 and len(tokenizer.decode(ids[:k])) > cut:
        k -= 1
    return ids[:k], tokenizer.decode(ids[:k]), True


def _finish_row(tokenizer, prompt: str, prompt_ids: list[int], ids: list[int], stops: Sequence[str], eos_id, pad_id) -> Sample:
    """One generated row -> a Sample. A stop string wins over a later EOS (a stopped row is
    padded, and the pad token may be the EOS token)."""
    eos_at = ids.index(eos_id) if eos_id in ids else len(ids)
    emitted = ids[:eos_at]
    if eos_at == len(ids):
        while emitted and emitted[-1] == pad_id:
            emitted.pop()
    text = tokenizer.decode(emitted)
    kept, text, stopped = _cut_at_stop(tokenizer, emitted, text, stops)
    if stopped:  # train on the tokens up to the one that completed the stop string
        k = len(kept) + 1
        while k < len(emitted) and not any(s in tokenizer.decode(emitted[len(kept) : k]) for s in stops):
            k += 1
        generated = emitted[:k]
    elif eos_at < len(ids):
        generated = emitted + [eos_id]
    else:
        generated = emitted
    return Sample(prompt, text, kept, stopped or eos_at < len(ids), generated, prompt_ids)


def encode_prompt(tokenizer, prompt: str) -> list[int]:
    """Token ids a prompt is sampled from; an empty prompt (unconditional generation)
    starts from the BOS token (EOS where there is none)."""
    bos = tokenizer.bos_token or tokenizer.eos_token
    return tokenizer(prompt or bos, add_special_tokens=False)["input_ids"]


@torch.no_grad()
def generate(
    model, tokenizer, prompts: Sequence[str], config: SamplingConfig | None = None, progress: bool = True, conditioning=None
) -> list[Sample]:
    """Sample one completion per prompt (repeat prompts for several samples each).

    ``conditioning`` (a :class:`tokenalign.policy.conditioning.Conditioning`) samples a
    conditionally trained model from ``<|good|>``; the samples' text and ids are plain.
    """
    from rich.progress import Progress

    cfg = config or SamplingConfig()
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    eos_id = tokenizer.eos_token_id
    samples: list[Sample] = []
    torch.manual_seed(cfg.seed)
    with Progress(transient=True, disable=not progress) as bar:
        task = bar.add_task("sampling", total=len(prompts))
        for start in range(0, len(prompts), cfg.batch_size):
            batch = list(prompts[start : start + cfg.batch_size])
            # An empty prompt (unconditional generation) starts from the BOS/EOS token.
            encoded = [encode_prompt(tokenizer, p) for p in batch]
            if conditioning is not None:
                plain_prompts, encoded = encoded, [conditioning.encode_prompt(tokenizer, p) for p in batch]
            width = max(len(e) for e in encoded)
            input_ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
            attention = torch.zeros((len(batch), width), dtype=torch.long)
            for i, e in enumerate(encoded):
                input_ids[i, width - len(e) :] = torch.tensor(e)
                attention[i, width - len(e) :] = 1
            kwargs = dict(max_new_tokens=cfg.max_new_tokens, pad_token_id=pad_id, eos_token_id=eos_id, use_cache=True)
            if cfg.greedy or cfg.temperature == 0:
                kwargs.update(do_sample=False)
            else:
                # top_k=0 and top_p=1.0 are passed, not left out: a model's generation_config
                # may carry its own defaults (top_k=50 is common) that would apply silently.
                kwargs.update(do_sample=True, temperature=cfg.temperature, top_k=cfg.top_k, top_p=cfg.top_p)
            if cfg.stop:
                from transformers import StoppingCriteriaList

                kwargs.update(stopping_criteria=StoppingCriteriaList([_StopOnStrings(tokenizer, cfg.stop, width)]))
            if conditioning is not None:
                from transformers import LogitsProcessorList, StoppingCriteriaList

                # Forced control tokens do not count: the budget is of plain tokens (the raw
                # limit leaves room for one control token per plain token at most).
                criteria = list(kwargs.get("stopping_criteria", [])) + [conditioning.stopping_criterion(cfg.max_new_tokens, width)]
                context = getattr(model.config, "n_positions", None) or getattr(model.config, "max_position_embeddings", None)
                raw_limit = 2 * cfg.max_new_tokens if context is None else min(2 * cfg.max_new_tokens, context - width)
                kwargs.update(logits_processor=LogitsProcessorList([conditioning.logits_processor()]),
                              stopping_criteria=StoppingCriteriaList(criteria), max_new_tokens=max(raw_limit, 1))
            out = model.generate(input_ids=input_ids.to(device), attention_mask=attention.to(device), **kwargs)
            for i, prompt in enumerate(batch):
                raw = out[i, width:].tolist()
                if conditioning is None:
                    samples.append(_finish_row(tokenizer, prompt, encoded[i], raw, cfg.stop, eos_id, pad_id))
                    continue
                plain = conditioning.strip(raw)[: cfg.max_new_tokens]  # padding after a budget stop is cut
                sample = _finish_row(tokenizer, prompt, plain_prompts[i], plain, cfg.stop, eos_id, pad_id)
                sample.conditioned_ids = (encoded[i], conditioning.raw_prefix(raw, len(sample.generated_ids)))
                samples.append(sample)
            bar.update(task, advance=len(batch))
    model.train(was_training)
    return samples
