"""The PPO value model: a separate backbone with a scalar head, as in FineGrainedRLHF's
reference settings (Wu et al., 2023).

V(s_t) is read at the column before each response token (the state the token is chosen
in), with position ids following the attention mask as for the policy. An encoder-decoder
backbone (``AutoModel`` of T5 / BART: encoder and decoder, no LM head) reads the batch as the
policy does (``encoder_decoder_inputs``): V(s_t) is its decoder's state at position t.

With LoRA (:meth:`ValueModel.add_lora`; a LoRA policy's PPO run does it, ``ppo.value_lora``)
the backbone's own weights stay frozen and only the adapters and the head train: the
backward pass then stops below the lowest adapted layer, as the policy's does.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from tokenalign.rollout.batch import TokenBatch, encoder_decoder_inputs, position_ids
from tokenalign.utils.models import decoder_start_token_id, is_encoder_decoder

__all__ = ["ValueModel"]

BACKBONE_DIR = "backbone"
LORA_DIR = "backbone-lora"
HEAD_NAME = "value_head.safetensors"


class ValueModel(nn.Module):
    """``AutoModel`` backbone + ``Linear(hidden, 1)`` head (zero-initialised: V starts at 0)."""

    def __init__(self, backbone: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone
        cfg = backbone.config
        d = next(getattr(cfg, n) for n in ("hidden_size", "n_embd", "d_model") if hasattr(cfg, n))
        self.head = nn.Linear(d, 1)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    @property
    def config(self):
        return self.backbone.config

    def forward(self, batch: TokenBatch, trunk=None) -> torch.Tensor:
        """Values ``[B, R]`` of the states before each response token; ``trunk``
        (``tokenalign.policy.trunk.Trunk``): its frozen lower blocks' states on ``batch``."""
        if is_encoder_decoder(self.backbone):
            out = self.backbone(**encoder_decoder_inputs(batch, decoder_start_token_id(self.backbone)), use_cache=False)
            hidden = out.last_hidden_state  # the decoder's: position t is the state before response token t
        elif trunk is not None:
            out = trunk.forward(self.backbone, batch, use_cache=False)
            hidden = out.last_hidden_state[:, batch.prompt_width - 1 : -1]
        else:
            out = self.backbone(
                input_ids=batch.input_ids,
                attention_mask=batch.attention_mask,
                position_ids=position_ids(batch.attention_mask),
                use_cache=False,
            )
            hidden = out.last_hidden_state[:, batch.prompt_width - 1 : -1]
        return self.head(hidden).squeeze(-1).float()

    def add_lora(self, settings) -> "ValueModel":
        """Wrap the backbone in fresh LoRA adapters (``tokenalign.utils.lora.LoraSettings``):
        its own weights freeze; the adapters and the head train."""
        from tokenalign.utils.lora import wrap_lora

        self.backbone = wrap_lora(self.backbone, settings, "FEATURE_EXTRACTION")
        return self

    @property
    def has_lora(self) -> bool:
        from tokenalign.utils.lora import has_lora

        return has_lora(self.backbone)

    @classmethod
    def from_backbone(cls, name_or_path: str | Path) -> "ValueModel":
        from transformers import AutoModel

        return cls(AutoModel.from_pretrained(str(name_or_path)))

    def save_pretrained(self, path: str | Path, state_dict: dict[str, torch.Tensor] | None = None) -> Path:
        """Backbone (``backbone/``; with LoRA the adapter-free base there and the adapters in
        ``backbone-lora/``) and head (safetensors) into ``path``; ``state_dict``: the model's
        full state gathered from several processes (default: its own)."""
        from safetensors.torch import save_file

        from tokenalign.utils.lora import save_backbone
        from tokenalign.utils.models import sub_state_dict

        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        save_backbone(self.backbone, path / BACKBONE_DIR, path / LORA_DIR, sub_state_dict(state_dict, "backbone."))
        head = sub_state_dict(state_dict, "head.") or self.head.state_dict()
        save_file({k: v.detach().cpu().contiguous() for k, v in head.items()}, str(path / HEAD_NAME))
        (path / "tokenalign_value.json").write_text(json.dumps({"format_version": 1}) + "\n")
        return path

    @classmethod
    def from_pretrained(cls, path: str | Path) -> "ValueModel":
        """The model :meth:`save_pretrained` wrote; with LoRA, trainable adapters on the frozen base."""
        from safetensors.torch import load_file

        from tokenalign.utils.lora import load_backbone

        path = Path(path)
        model = cls(load_backbone(path / BACKBONE_DIR, path / LORA_DIR))
        model.head.load_state_dict(load_file(str(path / HEAD_NAME)))
        return model
