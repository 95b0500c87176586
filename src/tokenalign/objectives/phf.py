"""Pretraining with human feedback (Korbak et al., ICML 2023): MLE, filtering, conditional
training, unlikelihood, RWR and AWR on a corpus scored segment by segment.

MLE, filtering and conditional training share the plain cross-entropy and differ in their
data (all documents; the documents the filter keeps; documents with ``<|good|>`` /
``<|bad|>`` control tokens before each segment); unlikelihood, RWR and AWR weigh tokens by
their segment's score. These objectives train on a corpus, not on the policy's samples:
each iteration is a batch of documents (the BOS token is their prompt). Defaults are the
PHF paper's PEP8 values.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Literal

import torch

from tokenalign.errors import ConfigError
from tokenalign.objectives.base import Chunk, Objective, register_objective
from tokenalign.objectives.phf_math import aligned_tokens, awr_loss, mle_loss, rwr_loss, unlikelihood_loss
from tokenalign.rollout.batch import Rollout, build_token_batch
from tokenalign.rollout.generate import Sample, encode_prompt

__all__ = ["PHFSettings", "PHFObjective", "PHF_OBJECTIVES"]

PHF_OBJECTIVES = ("phf-mle", "phf-filter", "phf-cond", "phf-ul", "phf-rwr", "phf-awr")


@dataclasses.dataclass
class PHFSettings:
    """The PHF objectives' settings (config section ``phf``); defaults are PHF's PEP8 values.

    ``corpus``: a JSONL file of documents (``{"text": ...}``); "" = the task's own corpus
    (pep8: dedented methods of the standard library's train split). Each document is split
    into segments (``segment``: lines for code, sentences for text) scored by the task's
    scorer; a segment's score applies to its tokens.
    """

    corpus: str = ""
    documents: int = 2000  # at most this many documents (seeded choice)
    segment: Literal["line", "sentence"] = "line"
    max_tokens: int = 256  # documents are cut to this many tokens
    filter_threshold: float = 2.361e-3  # filtering: drop documents whose mean segment score > t
    cond_threshold: float = 0.0  # conditional: <|good|> iff segment score <= t
    drop_prob: float = 0.1  # conditional: a segment gets no control token with this probability
    ul_threshold: float = 0.0  # unlikelihood: aligned iff score <= t (0 is a hard threshold)
    ul_alpha: float = 0.01  # unlikelihood: weight of the unlikelihood term
    rwr_beta: float = 10.0  # RWR: temperature of exp(r/β)
    awr_alpha: float = 0.05  # AWR: weight of the value loss
    awr_beta: float = 1.0  # AWR: temperature of exp(A/β)
    max_weight: float = 1000.0  # RWR / AWR weight clamp

    def validate(self) -> None:
        if not 0.0 <= self.drop_prob <= 1.0:
            raise ConfigError(f"phf.drop_prob must be in [0, 1], got {self.drop_prob}")
        if not (self.rwr_beta > 0 and self.awr_beta > 0 and self.max_weight > 0):
            raise ConfigError("phf.rwr_beta, phf.awr_beta and phf.max_weight must be > 0")
        if not 0.0 <= self.awr_alpha <= 1.0:
            raise ConfigError(f"phf.awr_alpha must be in [0, 1], got {self.awr_alpha}")


class PHFObjective(Objective):
    """The shared part of the PHF objectives: corpus batches at temperature 1."""

    section = "phf"
    Settings = PHFSettings
    reports_kl = False  # a corpus batch is not the policy's: no KL to report

    def setup(self, trainer) -> None:
        if not trainer.data:
            raise ValueError(f"objective {self.name} trains on a scored corpus: pass its documents as data")

    @classmethod
    def training_data(cls, cfg, task, tokenizer, policy, conditioning=None) -> list:
        """The scored corpus (the same documents whatever the objective), cut to the model's
        context (one position is the BOS token they follow)."""
        from tokenalign.objectives.phf_data import build_phf_documents, load_documents, segment_scorer_for, task_documents
        from tokenalign.utils.models import context_length

        h = cfg.objective_settings
        context = context_length(policy.config)
        if context is not None and h.max_tokens > context - 1:
            h = dataclasses.replace(h, max_tokens=context - 1)
        texts = load_documents(h.corpus, h.documents, cfg.seed) if h.corpus else task_documents(task.name, h.documents, cfg.seed)
        control = (conditioning.good_id, conditioning.bad_id) if conditioning is not None else None
        return build_phf_documents(texts, tokenizer, segment_scorer_for(task, h.segment), h, cls.name, cfg.seed, control)

    def batch(self, trainer, iteration: int) -> Rollout:
        """A batch of the scored corpus as a rollout: documents sampled from nothing (the BOS
        token is their prompt), their token scores in ``extra["token_scores"]``."""
        docs = trainer.iteration_rows(trainer.data, iteration)
        bos = encode_prompt(trainer.tokenizer, "")
        samples = [Sample("", d.text, d.ids, True, d.ids, bos) for d in docs]
        batch = build_token_batch([s.prompt_ids for s in samples], [s.generated_ids for s in samples],
                                  trainer.tokenizer.pad_token_id).to(trainer.device)
        width = batch.response_mask.shape[1]
        token_scores = trainer.tensor_rows([d.token_scores for d in docs], width)
        scores = torch.tensor([-d.score for d in docs], dtype=torch.float32, device=trainer.device)
        zeros = torch.zeros_like(token_scores)
        return Rollout(samples, batch, zeros, zeros, -token_scores, scores, -token_scores, None, [],
                       {"token_scores": token_scores})

    def signal(self, ro: Rollout, iteration: int) -> dict[str, torch.Tensor]:
        return {"rewards": ro.rewards, "token_scores": ro.extra["token_scores"]}

    def update_temperature(self) -> float:
        return 1.0  # a corpus is learned at temperature 1

    def loss(self, chunk: Chunk, ro: Rollout, signal: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        loss, stats = self.token_loss(chunk, chunk.cut(signal["rewards"]), chunk.cut(signal["token_scores"]))
        return chunk.token_share * loss, {k: chunk.token_share * v for k, v in stats.items()}

    def token_loss(self, chunk: Chunk, rewards: torch.Tensor, token_scores: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        """Mean per-token loss (``rewards`` = -``token_scores``)."""
        return mle_loss(chunk.logprobs, chunk.mask), {}


@register_objective("phf-mle")
class PHFMLE(PHFObjective):
    name = "phf-mle"


@register_objective("phf-filter")
class PHFFilter(PHFObjective):
    name = "phf-filter"


@register_objective("phf-cond")
class PHFConditional(PHFObjective):
    name = "phf-cond"

    @classmethod
    def check_config(cls, cfg) -> None:
        if cfg.lora.enabled:
            raise ConfigError("phf-cond adds control tokens (new embedding rows): train without LoRA")

    @classmethod
    def prepare_policy(cls, cfg, policy, tokenizer) -> Any:
        from tokenalign.objectives.conditioning import BAD_TOKEN, GOOD_TOKEN, Conditioning
        from tokenalign.objectives.phf_math import add_control_tokens

        add_control_tokens(policy, tokenizer, (GOOD_TOKEN, BAD_TOKEN), seed=cfg.seed)  # no-op when resumed
        conditioning = Conditioning.from_tokenizer(tokenizer, cfg.objective_settings.segment)
        conditioning.mark(policy)  # the saved model records how to condition it
        return conditioning


@register_objective("phf-ul")
class PHFUnlikelihood(PHFObjective):
    name = "phf-ul"

    def token_loss(self, chunk, rewards, token_scores):
        h, mask = self.settings, chunk.mask
        aligned = aligned_tokens(token_scores, h.ul_threshold)
        share = float((aligned & mask).sum()) / max(int(mask.sum()), 1)
        return unlikelihood_loss(chunk.logprobs, aligned, mask, h.ul_alpha), {"aligned_tokens": share}


@register_objective("phf-rwr")
class PHFRewardWeighted(PHFObjective):
    name = "phf-rwr"

    def token_loss(self, chunk, rewards, token_scores):
        h = self.settings
        return rwr_loss(chunk.logprobs, rewards, chunk.mask, h.rwr_beta, h.max_weight), {}


@register_objective("phf-awr")
class PHFAdvantageWeighted(PHFObjective):
    name = "phf-awr"
    needs_value_model = True

    def token_loss(self, chunk, rewards, token_scores):
        h = self.settings
        values = chunk.value_model(chunk.batch)
        loss, stats = awr_loss(chunk.logprobs, rewards, values, chunk.mask, h.awr_alpha, h.awr_beta, h.max_weight)
        return loss, {k: float(v) for k, v in stats.items()}
