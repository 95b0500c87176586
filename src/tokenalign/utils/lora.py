"""LoRA adapters (peft) for policies and for reward- and value-model backbones, with one
settings block; a backbone with adapters is saved as its adapter-free base plus the
adapters, so that it reloads (and a run resumes) with trainable adapters on the same base."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from tokenalign.errors import TokenalignError

__all__ = ["LoraSettings", "last_layers_lora", "wrap_lora", "has_lora", "save_backbone", "load_backbone"]


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


def last_layers_lora(model: str, n_layers: int, r: int = 16, alpha: int = 32) -> dict[str, Any]:
    """LoraSettings keys for r / α adapters on the last ``n_layers`` blocks of the model in
    folder (or hub id) ``model`` (0: every block): the backward pass stops below the lowest."""
    from transformers import AutoConfig

    total = AutoConfig.from_pretrained(model).num_hidden_layers
    layers = list(range(max(0, total - n_layers), total)) if n_layers else []
    return {"enabled": True, "r": r, "alpha": alpha, "layers": layers}


def _layer_list_name(model) -> str:
    """The attribute name of the model's list of transformer blocks (``layers`` for Llama,
    ``h`` for GPT-2), which peft needs to find layer indices."""
    from tokenalign.utils.models import block_list

    found = block_list(model)
    if found is None:
        raise TokenalignError("lora.layers: the model has no list of layers to pick from")
    return found[1]


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


def has_lora(model) -> bool:
    """Whether ``model`` is wrapped in peft adapters."""
    return hasattr(model, "peft_config")


def _base_state(backbone, backbone_state: dict[str, Any] | None = None) -> dict[str, Any]:
    """The adapter-free weights of a peft-wrapped backbone under the base model's own names
    (peft keeps a wrapped layer's weight at ``<name>.base_layer.weight``; adapter weights
    are left out). ``backbone_state``: the wrapper's gathered state dict (default: its own)."""
    from tokenalign.utils.models import sub_state_dict

    source = sub_state_dict(backbone_state, "base_model.model.")
    if source is None:
        source = backbone.get_base_model().state_dict()
    return {key.replace(".base_layer.", "."): value.detach().cpu().contiguous()
            for key, value in source.items() if "lora_" not in key}


def save_backbone(backbone, folder: str | Path, lora_folder: str | Path, state_dict: dict[str, Any] | None = None) -> None:
    """Write an ``AutoModel`` backbone (safetensors) into ``folder``; one with adapters as
    its adapter-free base there and the adapters (peft's format) in ``lora_folder``.
    ``state_dict``: the backbone's state gathered from several processes (default: its own)."""
    given = {"state_dict": state_dict} if state_dict is not None else {}
    if has_lora(backbone):
        backbone.get_base_model().save_pretrained(folder, state_dict=_base_state(backbone, state_dict),
                                                  safe_serialization=True)
        backbone.save_pretrained(lora_folder, **given)
    else:
        backbone.save_pretrained(folder, safe_serialization=True, **given)


def load_backbone(folder: str | Path, lora_folder: str | Path, **kwargs: Any):
    """The ``AutoModel`` written by :func:`save_backbone`, with trainable adapters when
    ``lora_folder`` holds them (``kwargs`` go to ``from_pretrained``, e.g. ``dtype``)."""
    from transformers import AutoModel

    backbone = AutoModel.from_pretrained(folder, **kwargs)
    if Path(lora_folder).is_dir():
        backbone = wrap_lora(backbone, LoraSettings(enabled=True), "FEATURE_EXTRACTION", lora_folder)
    return backbone
