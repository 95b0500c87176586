"""TokenRewardModel: any Hugging Face backbone + a per-token MLP head (the guidance model of
Yang et al., NeurIPS 2023; the token classifier of Xu et al., ACL 2024).

- Causal decoders read ``prompt + response``; the reward of response token t is read at
  that token's own position, so it sees (x, y_<=t). Prompt positions get no reward.
- Encoder-decoders read the prompt with the encoder and ``[decoder_start] + response``
  with the decoder; the reward of y_t is read at decoder position t + 1 (it sees
  start, y_1..y_t). The same input layout is used when learning and when using the
  reward (the reference code is off by one between the two; we are not).
- Head: Linear(d, 2048) -> ReLU -> Linear(2048, 1), xavier_uniform(gain=1e-4), bias -1e-4.
- Bounding of the raw output z: ``bounded`` (PG default), ``sigmoid``, ``identity``, or
  ``centered_sigmoid`` = 2 sigmoid(z) - 1 (the edit-supervised reward, TLCR's r = 2p - 1).

``save_pretrained`` writes the backbone (safetensors), the head (``head.safetensors``) and
``tokenalign_reward.json``; ``from_pretrained`` needs nothing of the training code's state.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path
from typing import Literal

import torch
from torch import nn

from tokenalign.errors import TokenalignError

log = logging.getLogger(__name__)

CONFIG_NAME = "tokenalign_reward.json"
HEAD_NAME = "head.safetensors"
BACKBONE_DIR = "backbone"
LORA_DIR = "backbone-lora"

Bounding = Literal["bounded", "sigmoid", "identity", "centered_sigmoid"]

__all__ = ["TokenRewardHeadConfig", "TokenRewardModel", "bound"]


@dataclasses.dataclass
class TokenRewardHeadConfig:
    """What the head looks like and how its output becomes a reward."""

    hidden_size: int = 2048
    init_gain: float = 1e-4
    init_bias: float = -1e-4
    bounding: Bounding = "bounded"
    # Read an end-of-response token (the tokenizer's EOS) after every response, in learning and
    # in use, as seq2seq targets end in EOS: its reward sees the whole response *and* that it
    # ends there (an unclosed bracket or string at the end; an empty response has a token to score)
    end_token: bool = False


def bound(z: torch.Tensor, how: Bounding) -> torch.Tensor:
    """Map raw head outputs to rewards. NaN raises: it is never silently zeroed."""
    if torch.isnan(z).any():
        raise FloatingPointError("token reward head produced NaN")
    if how == "bounded":
        return 1e-8 + nn.functional.softplus(1.0 - nn.functional.softplus(1.0 - z) - 1e-8)
    if how == "sigmoid":
        return torch.sigmoid(z)
    if how == "centered_sigmoid":
        return 2.0 * torch.sigmoid(z) - 1.0
    if how == "identity":
        return z
    raise ValueError(f"unknown bounding {how!r}")


class TokenRewardModel(nn.Module):
    """A backbone (``AutoModel``: no LM head) plus a per-token scalar head."""

    def __init__(self, backbone: nn.Module, head_config: TokenRewardHeadConfig | None = None) -> None:
        super().__init__()
        self.backbone = backbone
        self.head_config = head_config or TokenRewardHeadConfig()
        # how the token rewards make a sequence reward (what its ranking loss was trained on;
        # set by the learner, saved with the model): aggregator name and softmax/softmin beta
        self.sequence_aggregate: tuple[str, float] = ("avg", 2.0)
        self.is_encoder_decoder = bool(getattr(backbone.config, "is_encoder_decoder", False))
        d = _hidden_size(backbone.config)
        h = self.head_config.hidden_size
        self.head = nn.Sequential(nn.Linear(d, h), nn.ReLU(), nn.Linear(h, 1))
        for layer in (self.head[0], self.head[2]):
            nn.init.xavier_uniform_(layer.weight, gain=self.head_config.init_gain)
            nn.init.constant_(layer.bias, self.head_config.init_bias)

    @property
    def config(self):  # the backbone's config, as HF code expects ``model.config``
        return self.backbone.config

    def end_token_id(self, tokenizer) -> int | None:
        """The id appended to every response (``head_config.end_token``), else None."""
        if not self.head_config.end_token:
            return None
        if tokenizer.eos_token_id is None:
            raise TokenalignError("head.end_token needs a tokenizer with an EOS token")
        return int(tokenizer.eos_token_id)

    @property
    def max_positions(self) -> int | None:
        """The longest input the backbone can read (None when it has no fixed limit)."""
        if self.is_encoder_decoder:
            return None  # relative positions (T5) or per-model limits handled by truncation
        from tokenalign.utils.models import context_length

        return context_length(self.backbone.config)

    def fit_length(self, max_length: int | None) -> int | None:
        """``max_length`` capped at what the backbone can read (a warning says so)."""
        limit = self.max_positions
        if limit is None or (max_length is not None and max_length <= limit):
            return max_length
        if max_length is not None:
            log.warning("max_length %d exceeds the backbone's %d positions; using %d", max_length, limit, limit)
        return limit

    def raw_scores(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        decoder_input_ids: torch.Tensor | None = None,
        decoder_attention_mask: torch.Tensor | None = None,
        response_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Raw head output z at every (decoder) position: ``[B, T]``.

        With ``response_mask``, the head runs only on those positions (others are 0): the
        2048-wide head then costs nothing on prompt and padding tokens. ``position_ids``
        (causal backbones) go to the backbone as they are; with a 4-D ``attention_mask``
        they let one row hold several sequences (see ``batching.pack_shared_prompt``).
        """
        if self.is_encoder_decoder:
            if decoder_input_ids is None:
                raise ValueError("an encoder-decoder reward model needs decoder_input_ids")
            out = self.backbone(
                input_ids=input_ids,
                attention_mask=attention_mask,
                decoder_input_ids=decoder_input_ids,
                decoder_attention_mask=decoder_attention_mask,
                use_cache=False,
            )
        else:
            extra = {"position_ids": position_ids} if position_ids is not None else {}
            out = self.backbone(input_ids=input_ids, attention_mask=attention_mask, use_cache=False, **extra)
        hidden = out.last_hidden_state
        if response_mask is None:
            return self.head(hidden).squeeze(-1)
        z = hidden.new_zeros(hidden.shape[:2])
        z[response_mask] = self.head(hidden[response_mask]).squeeze(-1).to(z.dtype)
        return z

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        decoder_input_ids: torch.Tensor | None = None,
        decoder_attention_mask: torch.Tensor | None = None,
        response_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        raw: bool = False,
    ) -> torch.Tensor:
        """Bounded rewards at every (decoder) position ``[B, T]``; read them at the response mask.
        ``raw``: the head's raw output (:meth:`raw_scores`), through ``forward`` so that a
        distributed wrapper (DDP) sees the pass and averages its gradients."""
        z = self.raw_scores(input_ids, attention_mask, decoder_input_ids, decoder_attention_mask, response_mask,
                            position_ids=position_ids)
        return z if raw else bound(z.float(), self.head_config.bounding)

    # ---- LoRA --------------------------------------------------------------------------
    def add_lora(self, settings) -> "TokenRewardModel":
        """Wrap the backbone in fresh LoRA adapters (``tokenalign.utils.lora.LoraSettings``):
        the backbone's own weights freeze, the adapters and the head train."""
        from tokenalign.utils.lora import wrap_lora

        self.backbone = wrap_lora(self.backbone, settings, "FEATURE_EXTRACTION")
        return self

    @property
    def has_lora(self) -> bool:
        from tokenalign.utils.lora import has_lora

        return has_lora(self.backbone)

    # ---- persistence -------------------------------------------------------------------
    def save_pretrained(self, path: str | Path, tokenizer=None, state_dict: dict[str, torch.Tensor] | None = None) -> Path:
        """Write backbone + head + config (all safetensors/JSON) into ``path``; with LoRA, the
        adapter-free backbone and the adapters (``backbone-lora/``) separately, so that a
        run resumes with trainable adapters on the same frozen base. ``state_dict``: the
        model's full state gathered from several processes (default: its own)."""
        from safetensors.torch import save_file

        from tokenalign.utils.lora import save_backbone
        from tokenalign.utils.models import sub_state_dict

        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        save_backbone(self.backbone, path / BACKBONE_DIR, path / LORA_DIR, sub_state_dict(state_dict, "backbone."))
        head = sub_state_dict(state_dict, "head.") or self.head.state_dict()
        head_state = {k: v.detach().cpu().contiguous() for k, v in head.items()}
        save_file(head_state, str(path / HEAD_NAME))
        aggregator, beta = self.sequence_aggregate
        meta = {"head": dataclasses.asdict(self.head_config), "sequence_aggregate": {"aggregator": aggregator, "beta": beta},
                "format_version": 1}
        (path / CONFIG_NAME).write_text(json.dumps(meta, indent=2) + "\n")
        if tokenizer is not None:
            tokenizer.save_pretrained(path)
        return path

    @classmethod
    def from_pretrained(cls, path: str | Path, dtype: torch.dtype | None = None) -> "TokenRewardModel":
        """Load a model written by :meth:`save_pretrained` (no training state needed)."""
        from safetensors.torch import load_file

        from tokenalign.utils.lora import load_backbone

        path = Path(path)
        if not (path / CONFIG_NAME).is_file():
            raise TokenalignError(f"{path} is not a tokenalign reward model (no {CONFIG_NAME})")
        meta = json.loads((path / CONFIG_NAME).read_text())
        head_config = TokenRewardHeadConfig(**meta["head"])
        kwargs = {"dtype": dtype} if dtype is not None else {}
        # with adapters: trainable ones on the frozen base (a resumed run trains them)
        model = cls(load_backbone(path / BACKBONE_DIR, path / LORA_DIR, **kwargs), head_config)
        model.head.load_state_dict(load_file(str(path / HEAD_NAME)))
        seq = meta.get("sequence_aggregate")  # absent in folders written before it was saved: the learner's default
        if seq:
            model.sequence_aggregate = (seq["aggregator"], float(seq["beta"]))
        return model.eval()

    @classmethod
    def from_backbone(
        cls,
        name_or_path: str | Path,
        head_config: TokenRewardHeadConfig | None = None,
        trust_remote_code: bool = False,
    ) -> "TokenRewardModel":
        """A fresh head on a pretrained backbone (a local folder or a hub id)."""
        from transformers import AutoModel

        try:
            backbone = AutoModel.from_pretrained(str(name_or_path), trust_remote_code=trust_remote_code)
        except OSError as err:
            raise TokenalignError(f"cannot load backbone '{name_or_path}': {err}") from None
        return cls(backbone, head_config)


def _hidden_size(config) -> int:
    for name in ("hidden_size", "n_embd", "d_model", "dim"):
        value = getattr(config, name, None)
        if isinstance(value, int):
            return value
    raise TokenalignError(f"cannot find the hidden size in the backbone config {type(config).__name__}")
