"""Reuse of a frozen trunk across an update's passes.

With LoRA on the last N blocks only (``lora.layers``), the embeddings and the blocks below
the lowest adapted one never change during a run. Every pass of an update (PPO: ``epochs``
x minibatches, for the policy and for its value model) would recompute them on the same
rows. Here they run once per rollout: the hidden states entering the first trained block
are kept for every row and column of the rollout, and each pass runs only the blocks from
there up (``inputs_embeds`` with the lower blocks left out): the rollout's reference pass
(adapters off: the lower blocks carry none), a value model whose lower blocks hold the
same weights (``same_trunk``), and every update pass. The math is the same forward pass
cut in two; on SmolLM2 with 6 of 30 blocks adapted each pass skips 24 blocks, and a PPO
iteration's passes after sampling take 79 instead of 156 s with the same values and
adapters bit for bit (benchmarks/RESULTS.md).

It applies to decoder-only models whose forward treats ``inputs_embeds`` as the input of
the first block (``SPLITTABLE``: Llama, Mistral, Qwen2/3; GPT-2 adds position embeddings
to ``inputs_embeds`` and Gemma scales them, so they are not listed), without dropout, in
one process (a wrapped DDP/FSDP module is not split). Anything else runs whole.
"""

from __future__ import annotations

import contextlib
import dataclasses
from typing import Iterator

import torch
from torch import nn

from tokenalign.rollout.batch import TokenBatch, position_ids
from tokenalign.utils.models import block_list

__all__ = ["SPLITTABLE", "Trunk", "adapters_below", "frozen_blocks", "same_trunk", "trunk_states", "upper_blocks"]

# config keys that do not change what the embeddings and blocks compute
_CONFIG_NOISE = {"architectures", "_name_or_path", "transformers_version", "torch_dtype", "dtype", "use_cache",
                 "tie_word_embeddings", "return_dict", "output_hidden_states", "output_attentions"}

# model types whose decoder reads inputs_embeds as the first block's input, unscaled, and
# whose blocks need nothing but the hidden states, the mask and the positions
SPLITTABLE = ("llama", "mistral", "qwen2", "qwen3")


def frozen_blocks(model: nn.Module) -> int:
    """How many leading blocks of ``model`` (with its embeddings) train nothing and can be
    reused: 0 when the model cannot be split (``SPLITTABLE``, dropout) or its embeddings or
    first block train."""
    config = getattr(model, "config", None)
    if getattr(config, "model_type", None) not in SPLITTABLE or getattr(config, "is_encoder_decoder", False):
        return 0
    if getattr(config, "attention_dropout", 0.0) or any(isinstance(m, nn.Dropout) and m.p > 0 for m in model.modules()):
        return 0
    found = block_list(model)
    embeddings = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    if found is None or embeddings is None or any(p.requires_grad for p in embeddings.parameters()):
        return 0
    layers = getattr(*found)
    for i, block in enumerate(layers):
        if any(p.requires_grad for p in block.parameters()):
            return i
    return len(layers)


def adapters_below(model: nn.Module, blocks: int) -> bool:
    """Whether any of the first ``blocks`` blocks of ``model`` holds a LoRA adapter (then the
    model with its adapters off, the reference, computes other states there)."""
    layers = getattr(*block_list(model))
    return any("lora_" in name for block in list(layers)[:blocks] for name, _ in block.named_parameters())


def same_trunk(a: nn.Module, b: nn.Module, blocks: int) -> bool:
    """Whether ``a`` and ``b`` compute the same states entering block ``blocks``: the same
    config, equal embeddings, lower blocks and rotary buffers (e.g. a LoRA policy and a LoRA
    value model on one base, the usual PPO setup). Then one trunk serves both."""
    configs = [{k: v for k, v in m.config.to_dict().items() if k not in _CONFIG_NOISE} for m in (a, b)]
    if configs[0] != configs[1] or frozen_blocks(a) < blocks or frozen_blocks(b) < blocks:
        return False

    def tensors(model: nn.Module) -> list[tuple[str, torch.Tensor]]:
        layers = getattr(*block_list(model))
        out = [("embed." + n, t) for n, t in model.get_input_embeddings().named_parameters()]
        out += [(f"{i}.{n}", t) for i, block in enumerate(list(layers)[:blocks]) for n, t in block.named_parameters()]
        out += [(f"{name.rsplit('.', 1)[-1]}.{n}", t) for name, mod in model.named_modules() if name.endswith("rotary_emb")
                for n, t in mod.named_buffers()]
        return out

    left, right = tensors(a), tensors(b)
    return len(left) == len(right) and all(
        na == nb and ta.shape == tb.shape and ta.dtype == tb.dtype and bool(torch.equal(ta, tb))
        for (na, ta), (nb, tb) in zip(left, right))


class _Reached(Exception):
    """Raised by the hook on the first trained block: the trunk's output is captured."""


@torch.no_grad()
def trunk_states(model: nn.Module, batch: TokenBatch, blocks: int) -> torch.Tensor:
    """The hidden states entering block ``blocks`` of ``model`` for every row and column of
    ``batch`` ([B, T, d]): the forward pass stops there."""
    parent, attr = block_list(model)
    captured: list[torch.Tensor] = []

    def grab(module, args, kwargs):
        captured.append(args[0] if args else kwargs["hidden_states"])
        raise _Reached

    handle = getattr(parent, attr)[blocks].register_forward_pre_hook(grab, with_kwargs=True)
    try:
        model(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
              position_ids=position_ids(batch.attention_mask), use_cache=False)
    except _Reached:
        pass
    finally:
        handle.remove()
    return captured[0].detach()


@contextlib.contextmanager
def upper_blocks(model: nn.Module, blocks: int) -> Iterator[None]:
    """Within the block, ``model`` runs only its blocks from ``blocks`` up: its forward then
    takes the trunk's states as ``inputs_embeds``."""
    parent, attr = block_list(model)
    layers = getattr(parent, attr)
    setattr(parent, attr, nn.ModuleList(list(layers)[blocks:]))
    try:
        yield
    finally:
        setattr(parent, attr, layers)


@dataclasses.dataclass
class Trunk:
    """The hidden states entering block ``blocks`` of one model for a batch's rows and columns."""

    states: torch.Tensor  # [B, T, d]
    blocks: int

    @classmethod
    def of(cls, model: nn.Module, batch: TokenBatch, rows_per_pass: int = 0) -> "Trunk | None":
        """The trunk of ``model`` on ``batch`` (``rows_per_pass`` rows a forward pass, all
        columns; 0: all rows at once), or None when it has no frozen blocks to reuse."""
        blocks = frozen_blocks(model)
        if not blocks:
            return None
        n = batch.input_ids.shape[0]
        step = rows_per_pass or n
        parts = [trunk_states(model, batch.rows(torch.arange(i, min(i + step, n), device=batch.input_ids.device)), blocks)
                 for i in range(0, n, step)]
        return cls(torch.cat(parts), blocks)

    def rows(self, full: TokenBatch, index: torch.Tensor, sub: TokenBatch) -> "Trunk":
        """The part for ``sub``: rows ``index`` of ``full``, trimmed (``TokenBatch.trimmed``)."""
        lead = full.prompt_width - sub.prompt_width
        return Trunk(self.states[index][:, lead : lead + sub.input_ids.shape[1]], self.blocks)

    def forward(self, model: nn.Module, batch: TokenBatch, **kwargs):
        """``model``'s forward on ``batch`` from the trunk up (``kwargs``: the forward's other
        arguments, e.g. ``use_cache``, ``logits_to_keep``)."""
        with upper_blocks(model, self.blocks):
            return model(inputs_embeds=self.states, attention_mask=batch.attention_mask,
                         position_ids=position_ids(batch.attention_mask), **kwargs)
