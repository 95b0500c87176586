"""DPO (Rafailov et al., NeurIPS 2023): train the policy offline on preference pairs.

Each iteration takes ``prompts_per_iteration`` pairs (prompt, chosen y_w, rejected y_l) of
``dpo.data`` and minimises

    L = -log σ(β [(log π(y_w|x) - log π_ref(y_w|x)) - (log π(y_l|x) - log π_ref(y_l|x))])

(with ``dpo.label_smoothing`` ε > 0: conservative DPO, ``objectives.losses.dpo_loss``),
sequence log-probs summed over the response tokens. The reference's log-probs are
computed once per batch, with one no-grad pass of the trainer's reference (the frozen
initial model, or the policy with its LoRA adapters off); only the policy's pass runs per
chunk. A chunk always holds both responses of its pairs, so gradient accumulation over
chunks gives exactly the whole batch's gradient.

The rollout of an iteration is laid out as rows ``0..P-1`` = the chosen responses and
``P..2P-1`` = the rejected ones, pair i in rows i and P + i.
"""

from __future__ import annotations

import dataclasses
import logging

import torch

from tokenalign.errors import ConfigError
from tokenalign.objectives.base import Chunk, Objective, register_objective
from tokenalign.objectives.losses import dpo_loss, sequence_logprobs
from tokenalign.rollout.batch import Rollout, build_token_batch
from tokenalign.rollout.generate import Sample, encode_prompt

log = logging.getLogger(__name__)

__all__ = ["DPOSettings", "DPOPair", "DPO", "tokenize_pairs"]


@dataclasses.dataclass
class DPOSettings:
    """DPO's own settings (config section ``dpo``).

    Parameters:
        data (`str`, no default: required):
            A ``pairs`` dataset (``prompt``, ``chosen``, ``rejected``; any source
            ``tokenalign data check --format pairs`` reads). A prompt is text or a list of
            chat messages, rendered with the policy's chat template (the generation prompt
            opened) as the trainer's other prompts are.
        beta (`float`, defaults to `0.1`):
            β, the strength of the implicit KL constraint to the reference: the implicit
            reward is β log π/π_ref, and a higher β keeps the policy closer to the reference.
            0.1 as in the DPO paper.
        label_smoothing (`float`, defaults to `0.0`):
            ε of conservative DPO (cDPO, Mitchell 2023): the probability that a pair's
            preference label is wrong; the loss becomes -(1-ε) log σ(h) - ε log σ(-h).
            0 is DPO. Must be in [0, 0.5).
        max_response_tokens (`int`, defaults to `256`):
            Each response keeps its first this many tokens (its EOS included); 0 = no cut.
            A pair that does not fit the model's context keeps the last tokens of its prompt.
        append_eos (`bool`, defaults to `True`):
            End each response with the tokenizer's EOS token, so the policy also learns
            where the preferred answer ends (TRL's DPOTrainer does the same).
    """

    data: str = ""
    beta: float = 0.1
    label_smoothing: float = 0.0
    max_response_tokens: int = 256
    append_eos: bool = True

    def validate(self) -> None:
        if not self.beta > 0:
            raise ConfigError(f"dpo.beta must be > 0, got {self.beta}")
        if not 0.0 <= self.label_smoothing < 0.5:
            raise ConfigError(f"dpo.label_smoothing must be in [0, 0.5), got {self.label_smoothing}")
        if self.max_response_tokens < 0:
            raise ConfigError(f"dpo.max_response_tokens must be >= 0, got {self.max_response_tokens}")


@dataclasses.dataclass(frozen=True)
class DPOPair:
    """One preference pair, rendered and tokenized for the policy."""

    prompt: str
    chosen: str
    rejected: str
    prompt_ids: tuple[int, ...]
    chosen_ids: tuple[int, ...]
    rejected_ids: tuple[int, ...]


def tokenize_pairs(records, tokenizer, settings: DPOSettings, context: int | None, model_name: str = "the policy") -> list[DPOPair]:
    """Pair records as token ids of the policy: prompts rendered (chat messages through the
    chat template), responses cut to ``max_response_tokens`` (EOS appended first when
    ``append_eos``), prompts cut to their last tokens when a pair would overflow ``context``."""
    from tokenalign.data.prompts import render_prompts

    prompts = render_prompts([r.prompt for r in records], tokenizer, model_name)
    eos = [tokenizer.eos_token_id] if settings.append_eos and tokenizer.eos_token_id is not None else []
    limit = settings.max_response_tokens or None
    cut_prompts = 0
    pairs = []
    for record, prompt in zip(records, prompts):
        responses = [(tokenizer(text, add_special_tokens=False)["input_ids"] + eos)[:limit]
                     for text in (record.chosen, record.rejected)]
        prompt_ids = encode_prompt(tokenizer, prompt)
        if context is not None:
            room = context - 1  # at least one prompt token stays
            responses = [r[:room] for r in responses]
            keep = context - max(len(r) for r in responses)
            if len(prompt_ids) > keep:
                prompt_ids, cut_prompts = prompt_ids[-keep:], cut_prompts + 1
        pairs.append(DPOPair(prompt, record.chosen, record.rejected, tuple(prompt_ids), *map(tuple, responses)))
    if cut_prompts:
        log.warning("dpo: %d of %d pairs do not fit the model's context of %d positions: their prompts keep their "
                    "last tokens", cut_prompts, len(pairs), context)
    return pairs


@register_objective("dpo")
class DPO(Objective):
    """Direct preference optimisation on a pairs dataset (see the module docstring)."""

    name = "dpo"
    section = "dpo"
    Settings = DPOSettings
    reports_kl = False  # the batch is the dataset's responses, not the policy's samples

    @classmethod
    def check_config(cls, cfg) -> None:
        if cfg.sampling.temperature != 1.0:
            raise ConfigError("objective dpo trains the policy's log-probs at temperature 1: "
                              f"sampling.temperature must be 1, got {cfg.sampling.temperature}")

    @classmethod
    def check_sources(cls, cfg) -> None:
        if not cfg.objective_settings.data:
            raise ConfigError("objective dpo trains on preference pairs: set dpo.data=FILE (prompt, chosen, rejected)")

    @classmethod
    def training_data(cls, cfg, task, tokenizer, policy, conditioning=None) -> list:
        from tokenalign.data import load_records
        from tokenalign.utils.models import context_length, is_encoder_decoder

        settings = cfg.objective_settings
        records = load_records(settings.data, "pairs").records
        context = None if is_encoder_decoder(policy) else context_length(policy.config)
        return tokenize_pairs(records, tokenizer, settings, context, cfg.model or "the policy")

    def setup(self, trainer) -> None:
        if not trainer.data:
            raise ConfigError("objective dpo trains on preference pairs: pass them as data (DPO.training_data)")

    def batch(self, trainer, iteration: int) -> Rollout:
        """This iteration's pairs as a batch (chosen rows, then rejected rows) with the
        reference's log-probs, computed once here (no grad)."""
        pairs: list[DPOPair] = trainer.iteration_rows(trainer.data, iteration)
        samples = ([Sample(p.prompt, p.chosen, list(p.chosen_ids), True, list(p.chosen_ids), list(p.prompt_ids))
                    for p in pairs]
                   + [Sample(p.prompt, p.rejected, list(p.rejected_ids), True, list(p.rejected_ids), list(p.prompt_ids))
                      for p in pairs])
        batch = build_token_batch([s.prompt_ids for s in samples], [s.generated_ids for s in samples],
                                  trainer.tokenizer.pad_token_id).to(trainer.device)
        with torch.no_grad(), trainer.accelerator.autocast():
            ref = trainer.chunked(trainer.ref_logprobs, batch)
        zeros = torch.zeros_like(ref)
        scores = torch.zeros(len(samples), dtype=torch.float32, device=trainer.device)
        # no behaviour policy: the reference stands in for it (no KL is reported)
        return Rollout(samples, batch, ref, ref, zeros, scores, None, None, [])

    def signal(self, ro: Rollout, iteration: int) -> dict[str, torch.Tensor]:
        return {"ref_logps": sequence_logprobs(ro.ref_logprobs, ro.batch.response_mask)}

    def update_temperature(self) -> float:
        return 1.0

    def update_steps(self, trainer, ro: Rollout) -> list[list[torch.Tensor]]:
        """One step over the batch, in chunks of ``update_batch_size`` rows that hold whole
        pairs (chosen rows, then their rejected rows), pairs of similar length together."""
        mask, n = ro.batch.response_mask, ro.batch.response_mask.shape[0] // 2
        per = max((self.cfg.update_batch_size or 2 * n) // 2, 1)
        prompt_len = ro.batch.attention_mask[:n, : ro.batch.prompt_width].sum(dim=1).cpu()
        response_len = torch.maximum(mask[:n].sum(dim=1), mask[n:].sum(dim=1)).cpu()
        order = torch.argsort(prompt_len * (mask.shape[1] + 1) + response_len, stable=True)
        return [[torch.cat([idx, idx + n]) for idx in order.split(per)]]

    def loss(self, chunk: Chunk, ro: Rollout, signal: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        b = len(chunk.rows) // 2
        n = ro.batch.response_mask.shape[0] // 2
        if not torch.equal(chunk.rows[b:].cpu(), chunk.rows[:b].cpu() + n):
            raise ValueError("a dpo chunk must hold its pairs' chosen rows, then their rejected rows")
        s = self.settings
        logps = sequence_logprobs(chunk.logprobs, chunk.mask)
        ref = chunk.cut(signal["ref_logps"])
        losses, chosen, rejected = dpo_loss(logps[:b], logps[b:], ref[:b], ref[b:], s.beta, s.label_smoothing)
        share = chunk.row_share  # this chunk's share of the step's pairs
        margins = chosen - rejected
        with torch.no_grad():
            stats = {
                "rewards_chosen": share * float(chosen.mean()),
                "rewards_rejected": share * float(rejected.mean()),
                "rewards_margins": share * float(margins.mean()),
                "rewards_accuracies": share * float((margins > 0).float().mean()),
                "logps_chosen": share * float(logps[:b].mean()),
                "logps_rejected": share * float(logps[b:].mean()),
            }
        return share * losses.mean(), stats
