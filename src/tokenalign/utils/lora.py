"""LoRA adapters (peft) for policies and reward-model backbones, with one settings block."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from tokenalign.errors import TokenalignError

__all__ = ["LoraSettings", "wrap_lora"]


@dataclasses.dataclass
class LoraSettings:
    """LoRA adapters via peft: only the adapters (and any head) train; the base stays frozen."""

    enabled: bool = False
    r: int = 8
    alpha: int = 16
    dropout: float = 0.0
    target_modules: list[str] = dataclasses.field(default_factory=list)  # []: peft's default for the model
    # adapt only these layer indices (peft's layers_to_transform), e.g. the last few: the
    # backward pass then stops below the lowest adapted layer (cheaper); []: every layer
    layers: list[int] = dataclasses.field(default_factory=list)


def _layer_list_name(model) -> str:
    """The attribute name of the model's list of transformer blocks (``layers`` for Llama,
    ``h`` for GPT-2): the longest ``ModuleList``, which peft needs to find layer indices."""
    import torch

    lists = [(len(m), name.rsplit(".", 1)[-1]) for name, m in model.named_modules() if isinstance(m, torch.nn.ModuleList)]
    if not lists:
        raise TokenalignError("lora.layers: the model has no list of layers to pick from")
    return max(lists)[1]


def wrap_lora(model, settings: LoraSettings, task_type: str, adapter_dir: str | Path | None = None):
    """``model`` with fresh LoRA adapters, or with trainable adapters loaded from
    ``adapter_dir`` (a folder written by peft's ``save_pretrained``)."""
    try:
        from peft import LoraConfig, PeftModel, get_peft_model
    except ImportError as err:
        raise TokenalignError("LoRA needs peft: pip install 'tokenalign[lora]'") from err
    if adapter_dir is not None:
        return PeftModel.from_pretrained(model, str(adapter_dir), is_trainable=True)
    config = LoraConfig(task_type=task_type, r=settings.r, lora_alpha=settings.alpha, lora_dropout=settings.dropout,
                        target_modules=settings.target_modules or None, layers_to_transform=settings.layers or None,
                        layers_pattern=_layer_list_name(model) if settings.layers else None)
    return get_peft_model(model, config)
