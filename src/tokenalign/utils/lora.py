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
                        target_modules=settings.target_modules or None)
    return get_peft_model(model, config)
