"""Learning token rewards from sequence-level preferences: ranked lists (Yang et al.,
NeurIPS 2023) and minimal edits (Xu et al., ACL 2024).

One loop, three kinds of data:
- ``ranked`` lists (and ``pairs`` as K = 2): token rewards are aggregated into sequence
  scores (sum / avg / softmax / softmin) and trained with the Plackett-Luce loss on the
  preference order, ties broken at random;
- ``edits``: the token classifier objective on edit-diff labels (BCE on the raw head
  output; the reward is then 2 p(good) - 1 with ``bounding: centered_sigmoid``).

Every ``log_every`` optimizer steps a row (loss and accuracy since the last row, learning
rate, throughput) goes to steps.jsonl, the ``report_to`` trackers and one log line; each
epoch's row goes to metrics.jsonl and the trackers too.

accelerate handles the device, mixed precision, gradient accumulation and several
processes: each process takes its share of every batch (the batch order and size stay
those of one process) and its loss is weighted by that share, so the averaged gradient
is the whole batch's; the logged loss and accuracy are the whole batch's too. Checkpoints are
atomic folders holding everything for an exact resume (weights, optimizer, scheduler,
RNG states, position in the epoch); the data order of each epoch is a function of
(seed, epoch), so a resumed run sees exactly the batches an uninterrupted run would.

Throughput: the training data is tokenized once before the first step (batches are only
truncated and padded); with ``share_prompt`` (causal backbones) each list is one row that
holds its prompt once, so the prompt is encoded once per list instead of once per
response; ``gradient_checkpointing`` trades recomputation for activation memory.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from array import array
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import torch

from tokenalign.errors import ConfigError
from tokenalign.rewards.aggregate import aggregate
from tokenalign.rewards.batching import collate_for_reward, pack_shared_prompt, pad_token_id
from tokenalign.rewards.losses import plackett_luce_loss, preference_order, token_label_loss
from tokenalign.rewards.model import TokenRewardModel
from tokenalign.utils.kernels import fused_optimizer_kwargs, use_fast_kernels
from tokenalign.utils.logging import TrainingProgress
from tokenalign.utils.metrics import MetricsWriter, format_metrics
from tokenalign.utils.tracking import resolve_report_to

log = logging.getLogger(__name__)

# Packed rows are padded to a multiple of this width: CPU bf16 matmuls (oneDNN) cache a kernel
# and its buffers per distinct shape, so fewer shapes cost ~15% less peak memory (for ~4% time).
PACK_WIDTH_MULTIPLE = 32

__all__ = ["RewardLearnConfig", "RankedExample", "LabelledExample", "RewardLearner"]


@dataclasses.dataclass
class RewardLearnConfig:
    """Optimisation settings of reward learning (defaults: the PG paper's)."""

    epochs: int = 1
    batch_size: int = 8  # lists (or labelled responses) per optimizer micro-batch
    grad_accum: int = 1
    lr: float = 5e-5
    weight_decay: float = 0.0
    grad_clip: float = 5.0
    warmup_steps: int = 0
    # sum | avg | softmax | softmin (the paper's code, with a length term) | softmax_mean | softmin_mean
    # (log-mean-exp: no length term) | last (the last token's reward alone: a sequence reward model);
    # see tokenalign.rewards.aggregate
    aggregator: Literal["sum", "avg", "softmax", "softmin", "softmax_mean", "softmin_mean", "last"] = "avg"
    beta: float = 2.0
    max_length: int = 512
    mixed_precision: Literal["auto", "no", "bf16", "fp16"] = "auto"
    seed: int = 0
    eval_every_epoch: bool = True
    group_by_length: bool = True  # batch similar lengths together (less padding); order stays seeded
    save_every: int = 0  # optimizer steps between checkpoints; 0 = at each epoch end only
    # Ranked lists on causal backbones: one row per list holding the prompt once, each response
    # attending to the prompt and itself (same rewards as separate rows; dropout masks on the
    # prompt's tokens are then shared by the list's responses). Off: one row per response.
    share_prompt: bool = True
    # Recompute the backbone's activations in the backward pass (~23% less peak memory, ~40% more time).
    gradient_checkpointing: bool = False
    log_every: int = 10  # optimizer steps between per-step metric lines and rows (steps.jsonl, trackers); 0 = none
    # experiment trackers that get the per-step and per-epoch rows (accelerate's): none, tensorboard,
    # wandb, mlflow, several as a list or "a,b", or all (those installed); files go under the run
    # folder as for `tokenalign train` (align: set policy.report_to, its rounds log there)
    report_to: str | list[str] = "none"
    # a progress bar over steps (main process); without a logging setup (Python, a notebook) the
    # metric lines print above it
    progress: bool = True

    def validate(self) -> None:
        if self.batch_size < 1 or self.grad_accum < 1 or self.epochs < 1:
            raise ConfigError("batch_size, grad_accum and epochs must be >= 1")
        if not self.lr > 0:
            raise ConfigError(f"lr must be > 0, got {self.lr}")
        if self.log_every < 0:
            raise ConfigError(f"log_every must be >= 0, got {self.log_every}")
        resolve_report_to(self.report_to)


@dataclasses.dataclass(frozen=True)
class RankedExample:
    """K responses of one prompt with their preference scores (higher is better)."""

    prompt: str
    responses: tuple[str, ...]
    scores: tuple[float, ...]


@dataclasses.dataclass(frozen=True)
class LabelledExample:
    """One response with a label per response token (1 good, 0 bad, -100 ignored)."""

    prompt: str
    response: str
    labels: tuple[float, ...]


def _set_checkpointing(backbone, on: bool) -> None:
    """Turn a HF backbone's activation (gradient) checkpointing on or off, non-reentrant."""
    if on:
        if hasattr(backbone, "activation_checkpointing_enable"):  # transformers >= 5.x
            backbone.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        else:
            backbone.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    elif hasattr(backbone, "activation_checkpointing_disable"):
        backbone.activation_checkpointing_disable()
    else:
        backbone.gradient_checkpointing_disable()


@dataclasses.dataclass(frozen=True)
class _Tokens:
    """One example's token ids (int32 arrays): the prompt once, then each response."""

    prompt: array
    responses: tuple[array, ...]


class _StepWindow:
    """Loss, accuracy counts and throughput of the micro-batches since the last per-step row."""

    def __init__(self, state: dict[str, Any] | None = None) -> None:
        state = state or {}
        self.losses: list[float] = list(state.get("losses", []))
        self.correct, self.judged = state.get("correct", 0.0), state.get("judged", 0.0)
        self.examples = state.get("examples", 0)
        self.start = time.perf_counter()

    def state(self) -> dict[str, Any]:
        """What a checkpoint keeps of the window (its clock restarts on resume)."""
        return {"losses": self.losses, "correct": self.correct, "judged": self.judged, "examples": self.examples}

    def add(self, loss: float, stats: dict[str, float], examples: int) -> None:
        self.losses.append(loss)
        self.correct += stats.get("correct", 0.0)
        self.judged += stats.get("judged", 0.0)
        self.examples += examples

    def row(self) -> dict[str, float]:
        """``loss`` (mean), ``accuracy`` (when the batches had pairs or labels) and ``examples_per_second``."""
        out = {"loss": sum(self.losses) / max(len(self.losses), 1)}
        if self.judged:
            out["accuracy"] = self.correct / self.judged
        out["examples_per_second"] = self.examples / max(time.perf_counter() - self.start, 1e-9)
        return out


class RewardLearner:
    """Trains a :class:`TokenRewardModel` on ranked lists or token-labelled responses.

    ``out_dir``: where checkpoint/, metrics.jsonl (a row per epoch), steps.jsonl (a row per
    ``log_every`` steps) and the trackers' files go; None: nothing is written.
    ``run_config``: the config the trackers record (default: ``config``), e.g. the whole
    ``tokenalign reward`` config.
    """

    def __init__(self, model: TokenRewardModel, tokenizer, config: RewardLearnConfig, out_dir: str | Path | None = None,
                 run_config: Any = None):
        from tokenalign.config import to_dict
        from tokenalign.utils.accel import make_accelerator
        from tokenalign.utils.tracking import Trackers, accelerator_kwargs, resolve_report_to

        config.validate()
        self.config = config
        self.tokenizer = tokenizer
        self.out_dir = Path(out_dir) if out_dir is not None else None
        report_to = resolve_report_to(config.report_to)
        self.accelerator = make_accelerator(config.mixed_precision, gradient_accumulation_steps=config.grad_accum,
                                            **accelerator_kwargs(report_to, out_dir))
        recorded = run_config if run_config is not None else config
        self.trackers = Trackers(self.accelerator, report_to, out_dir, to_dict(recorded) if report_to else {})
        main = self.accelerator.is_main_process
        self.epoch_log = MetricsWriter(self.out_dir / "metrics.jsonl", main) if self.out_dir is not None else None
        self.step_log = MetricsWriter(self.out_dir / "steps.jsonl", main) if self.out_dir is not None else None
        self.model = model
        self._wrapped = model  # what the training forward goes through (the DDP/FSDP wrapper once prepared)
        model.sequence_aggregate = (config.aggregator, config.beta)  # saved with it: what its sequence reward is
        use_fast_kernels(model)
        self.max_length = model.fit_length(config.max_length)
        self.step = 0
        self.history: list[dict[str, Any]] = []

    # ---- batches -----------------------------------------------------------------------
    def tokenize(self, examples: Sequence[RankedExample] | Sequence[LabelledExample], chunk: int = 1024) -> list[_Tokens]:
        """Token ids of every example (prompt tokenized once per example), in chunks."""
        out: list[_Tokens] = []
        for start in range(0, len(examples), chunk):
            part = examples[start : start + chunk]
            texts = [ex.responses if isinstance(ex, RankedExample) else (ex.response,) for ex in part]
            flat = [t for group in texts for t in group]
            # exactly the calls of batching.tokenize_for_reward (which encode_for_reward uses)
            p_ids = self.tokenizer([ex.prompt for ex in part], add_special_tokens=True)["input_ids"]
            r_ids = self.tokenizer(flat, add_special_tokens=False)["input_ids"]
            end = self.model.end_token_id(self.tokenizer)
            tail = [end] if end is not None else []
            at = 0
            for ex_p, group in zip(p_ids, texts):
                responses = tuple(array("i", list(r_ids[at + j]) + tail) for j in range(len(group)))
                at += len(group)
                out.append(_Tokens(array("i", ex_p), responses))
        return out

    def _collate(self, prompt_ids: Sequence[Sequence[int]], response_ids: Sequence[Sequence[int]]):
        batch = collate_for_reward(
            prompt_ids,
            response_ids,
            pad_id=pad_token_id(self.tokenizer),
            is_encoder_decoder=self.model.is_encoder_decoder,
            max_length=self.max_length,
            decoder_start_token_id=getattr(self.model.config, "decoder_start_token_id", None),
        )
        return batch.to(self.accelerator.device)

    def _packed_mask_format(self) -> str | None:
        """How a packed row's 4-D mask must look for this backbone; None: do not pack."""
        if not self.config.share_prompt or self.model.is_encoder_decoder:
            return None
        impl = getattr(self.model.config, "_attn_implementation", None)
        return {"sdpa": "bool", "eager": "additive"}.get(impl)

    def ranked_loss(
        self,
        examples: Sequence[RankedExample],
        generator: torch.Generator | None = None,
        tokens: Sequence[_Tokens] | None = None,
        stats: dict[str, float] | None = None,
    ) -> torch.Tensor:
        """Plackett-Luce loss of a batch of lists (lists may have different K).

        ``tokens``: the examples' :meth:`tokenize` output, when already tokenized. ``stats``:
        gets ``judged``, the adjacent pairs of the preference order (ties excluded), and
        ``correct``, those the sequence scores order right (added to what it holds)."""
        if tokens is None:
            tokens = self.tokenize(examples)
        k_max = max(len(e.responses) for e in examples)
        n = len(examples)
        mask_format = self._packed_mask_format()
        if mask_format is not None:
            packed = pack_shared_prompt(
                [(tk.prompt, tk.responses) for tk in tokens],
                pad_id=pad_token_id(self.tokenizer), max_length=self.max_length, mask_format=mask_format,
                pad_to_multiple_of=PACK_WIDTH_MULTIPLE,
            ).to(self.accelerator.device)
            rewards = self._wrapped(**packed.model_inputs())  # [N, L]
            dense = rewards.reshape(-1)[packed.token_index]  # [N, K, T]
            mask = packed.token_mask
        else:
            prompts, responses, slots = [], [], []
            for i, tk in enumerate(tokens):
                for j, resp in enumerate(tk.responses):
                    prompts.append(tk.prompt)
                    responses.append(resp)
                    slots.append(i * k_max + j)
            batch = self._collate(prompts, responses)
            rewards = self._wrapped(**batch.model_inputs(with_response_mask=True))  # [B, T]
            t = rewards.shape[1]
            dense = rewards.new_zeros(n * k_max, t)
            mask = torch.zeros(n * k_max, t, dtype=torch.bool, device=rewards.device)
            idx = torch.tensor(slots, device=rewards.device)
            dense[idx] = rewards
            mask[idx] = batch.response_mask
            dense, mask = dense.view(n, k_max, t), mask.view(n, k_max, t)
        sample_mask = mask.any(-1)
        pref = torch.full((n, k_max), float("-inf"), dtype=torch.float64)
        for i, ex in enumerate(examples):
            pref[i, : len(ex.scores)] = torch.tensor(ex.scores, dtype=torch.float64)
        seq = aggregate(dense, mask, self.config.aggregator, self.config.beta, sample_mask=sample_mask)
        order_cpu = preference_order(pref, sample_mask.cpu(), generator=generator)
        order = order_cpu.to(seq.device)
        if stats is not None:
            with torch.no_grad():
                s = seq.detach().float().gather(-1, order).cpu()
                p = pref.gather(-1, order_cpu)
                m = sample_mask.cpu().gather(-1, order_cpu)
                ranked = (p[:, :-1] > p[:, 1:]) & m[:, :-1] & m[:, 1:]
                stats["correct"] = stats.get("correct", 0.0) + float(((s[:, :-1] > s[:, 1:]) & ranked).sum())
                stats["judged"] = stats.get("judged", 0.0) + float(ranked.sum())
        return plackett_luce_loss(seq.gather(-1, order), sample_mask.gather(-1, order))

    def labelled_loss(self, examples: Sequence[LabelledExample], tokens: Sequence[_Tokens] | None = None,
                      stats: dict[str, float] | None = None) -> torch.Tensor:
        """Token-classification loss on edit-diff labels (BCE on the raw head output).

        ``stats``: gets ``judged``, the labelled tokens, and ``correct``, those the head classifies right."""
        if tokens is None:
            tokens = self.tokenize(examples)
        batch = self._collate([tk.prompt for tk in tokens], [tk.responses[0] for tk in tokens])
        z = self._wrapped(**batch.model_inputs(with_response_mask=True), raw=True)
        labels = torch.full(z.shape, -100.0, device=z.device)
        for i, ex in enumerate(examples):
            pos = batch.response_mask[i].nonzero().squeeze(-1)
            n = min(len(pos), len(ex.labels))
            labels[i, pos[:n]] = torch.tensor(ex.labels[:n], device=z.device, dtype=labels.dtype)
        if stats is not None:
            with torch.no_grad():
                known = (labels == 0) | (labels == 1)
                stats["correct"] = stats.get("correct", 0.0) + float(((z.detach() > 0) == (labels == 1))[known].sum())
                stats["judged"] = stats.get("judged", 0.0) + float(known.sum())
        return token_label_loss(z, labels)

    # ---- training ----------------------------------------------------------------------
    def _record(self, rows: MetricsWriter | None, row: dict[str, Any]) -> None:
        """A metrics row (it carries its ``step``) to its JSONL file and the trackers (main process)."""
        if not self.accelerator.is_main_process:
            return
        if rows is not None:
            rows.append(row)
        self.trackers.log(row, step=row["step"])

    def _share(self, picked: list[int]) -> tuple[list[int], float]:
        """This process's share of a batch and the weight of its loss (its share of the
        batch times the number of processes: DDP's average of the gradients is then the
        whole batch's). A process left without an example (a batch smaller than the number
        of processes) runs the first one at weight 0, so that every process joins the step."""
        n = self.accelerator.num_processes
        if n == 1:
            return picked, 1.0
        mine = picked[self.accelerator.process_index :: n]
        if not mine:
            return picked[:1], 0.0
        return mine, len(mine) * n / len(picked)

    def _whole_batch(self, loss: float, weight: float, stats: dict[str, float]) -> tuple[float, dict[str, float]]:
        """The whole batch's loss and accuracy counts from every process's share (summed
        over the processes; a collective). One process: as they are."""
        n = self.accelerator.num_processes
        if n == 1:
            return loss, stats
        local = torch.tensor([loss * weight / n, stats.get("correct", 0.0) * (weight > 0), stats.get("judged", 0.0) * (weight > 0)],
                             dtype=torch.float64, device=self.accelerator.device)
        total = self.accelerator.reduce(local, reduction="sum").tolist()
        return total[0], ({"correct": total[1], "judged": total[2]} if total[2] else {})

    def save_model(self, path: str | Path) -> Path:
        """Write the model (and its tokenizer) to ``path`` atomically, as ``from_pretrained``
        reads it. Every process calls it: accelerate gathers the weights, the main process writes."""
        from tokenalign.utils.checkpoint import gathered_state_dict
        from tokenalign.utils.io import atomic_path

        state = gathered_state_dict(self.accelerator, self._wrapped)
        if self.accelerator.is_main_process:
            with atomic_path(path) as tmp:
                self.model.save_pretrained(tmp, tokenizer=self.tokenizer, state_dict=state)
        self.accelerator.wait_for_everyone()
        return Path(path)

    def _epoch_order(self, train: Sequence[Any], epoch: int) -> list[int]:
        """The example order of an epoch: a function of (seed, epoch) only, for exact resume.

        With ``group_by_length``, a random permutation is cut into windows of 64 batches,
        each window is sorted by length and cut into batches, and the batches are shuffled:
        batches hold similar lengths (little padding) but their order stays random.
        """
        cfg = self.config
        gen = torch.Generator().manual_seed(cfg.seed * 1000 + epoch)
        order = torch.randperm(len(train), generator=gen).tolist()
        if not cfg.group_by_length:
            return order

        def length(i: int) -> int:
            ex = train[i]
            texts = ex.responses if isinstance(ex, RankedExample) else (ex.response,)
            return len(ex.prompt) + max(len(t) for t in texts)
        window = cfg.batch_size * 64
        batches = []
        for w in range(0, len(order), window):
            chunk = sorted(order[w : w + window], key=length)
            batches.extend(chunk[b : b + cfg.batch_size] for b in range(0, len(chunk), cfg.batch_size))
        full = [b for b in batches if len(b) == cfg.batch_size]
        partial = [i for b in batches if len(b) < cfg.batch_size for i in b]  # at most one: kept last
        return [i for k in torch.randperm(len(full), generator=gen).tolist() for i in full[k]] + partial

    def fit(
        self,
        train: Sequence[RankedExample] | Sequence[LabelledExample],
        evaluate_fn=None,
        resume_from: str | Path | None = None,
        on_step=None,
    ) -> list[dict[str, Any]]:
        """Train for ``config.epochs``; returns the per-epoch metrics history.

        ``evaluate_fn(model) -> dict`` runs after each epoch; ``on_step(learner)`` after each
        optimizer step (for callers that log or stop early). The trackers are finished when
        it returns.
        """
        from tokenalign.utils.checkpoint import load_checkpoint, save_distributed_checkpoint
        from transformers import get_linear_schedule_with_warmup

        cfg = self.config
        if not train:
            raise ConfigError("no training examples")
        labelled = isinstance(train[0], LabelledExample)
        loss_fn = self.labelled_loss if labelled else self.ranked_loss
        torch.manual_seed(cfg.seed)
        n_batches = math.ceil(len(train) / cfg.batch_size)
        total_steps = math.ceil(n_batches / cfg.grad_accum) * cfg.epochs
        optimizer = torch.optim.Adam(self.model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay,
                                     **fused_optimizer_kwargs(self.accelerator.device))
        scheduler = get_linear_schedule_with_warmup(optimizer, cfg.warmup_steps, max(total_steps, 1)) if cfg.warmup_steps else None
        start_epoch, start_batch = 0, 0
        partial: dict[str, Any] = {}  # the epoch's and the step window's running sums at the checkpoint
        tokens = self.tokenize(train)
        if cfg.gradient_checkpointing:
            backbone = self.model.backbone
            if not getattr(backbone, "supports_gradient_checkpointing", False):
                raise ConfigError(f"{type(backbone).__name__} does not support gradient checkpointing")
            _set_checkpointing(backbone, True)
        self._wrapped, optimizer = self.accelerator.prepare(self.model, optimizer)
        if resume_from is not None:  # after prepare: under FSDP the optimizer state is sharded like the model
            state = load_checkpoint(resume_from, optimizer, scheduler, self.accelerator, [self._wrapped])
            self.step, start_epoch, start_batch = state["step"], state["epoch"], state["batch"]
            self.history = state.get("history", [])
            partial = state.get("partial", {})
            log.info("resumed from %s at step %d (epoch %d, batch %d)", resume_from, self.step, start_epoch, start_batch)
        for rows in (self.epoch_log, self.step_log):
            if rows is not None:
                # rows of steps after the checkpoint (all of them without one), written before a kill, are redone
                rows.trim(self.step if resume_from is not None else 0, key="step")

        def checkpoint(epoch: int, batch: int) -> None:
            if self.out_dir is None:
                return
            model = self.model
            save_distributed_checkpoint(
                self.accelerator,
                self.out_dir / "checkpoint",
                {"model": (self._wrapped, lambda d, sd: model.save_pretrained(d, tokenizer=self.tokenizer, state_dict=sd))},
                optimizer,
                scheduler,
                {"step": self.step, "epoch": epoch, "batch": batch, "history": self.history,
                 # mid-epoch: what the epoch's and the next step row's means are taken over so far
                 # (a resumed run's rows then equal an uninterrupted run's)
                 "partial": {"window": since.state(), **({"losses": losses, "stats": epoch_stats} if batch else {})}},
            )

        main = self.accelerator.is_main_process
        since = _StepWindow(partial.get("window"))  # micro-batches since the last per-step row
        self.trackers.start(self.step)
        try:
            with TrainingProgress(log, "reward learning", n_batches * cfg.epochs, start_epoch * n_batches + start_batch,
                                  cfg.progress and main) as progress:
                for epoch in range(start_epoch, cfg.epochs):
                    order = self._epoch_order(train, epoch)
                    self._wrapped.train()
                    resumed_mid_epoch = epoch == start_epoch and "losses" in partial
                    losses = list(partial["losses"]) if resumed_mid_epoch else []
                    epoch_stats: dict[str, float] = dict(partial["stats"]) if resumed_mid_epoch else {}
                    t0 = time.perf_counter()
                    first = start_batch if epoch == start_epoch else 0
                    for b in range(first, n_batches):
                        picked = order[b * cfg.batch_size : (b + 1) * cfg.batch_size]
                        mine, weight = self._share(picked)
                        items, item_tokens = [train[i] for i in mine], [tokens[i] for i in mine]
                        stats: dict[str, float] = {}
                        with self.accelerator.accumulate(self._wrapped), self.accelerator.autocast():
                            if labelled:
                                loss = loss_fn(items, tokens=item_tokens, stats=stats)
                            else:
                                gen = torch.Generator().manual_seed(cfg.seed * 7919 + epoch * 100003 + b)
                                loss = loss_fn(items, generator=gen, tokens=item_tokens, stats=stats)
                            self.accelerator.backward(loss if weight == 1.0 else loss * weight)
                            if self.accelerator.sync_gradients:
                                self.accelerator.clip_grad_norm_(self._wrapped.parameters(), cfg.grad_clip)
                            optimizer.step()
                            if scheduler is not None and self.accelerator.sync_gradients:
                                scheduler.step()
                            optimizer.zero_grad()
                        batch_loss, stats = self._whole_batch(loss.item(), weight, stats)
                        losses.append(batch_loss)
                        since.add(losses[-1], stats, len(picked))
                        for key, v in stats.items():
                            epoch_stats[key] = epoch_stats.get(key, 0.0) + v
                        if self.accelerator.sync_gradients:
                            self.step += 1
                            if cfg.log_every and self.step % cfg.log_every == 0:
                                row = {"step": self.step, "epoch": round(epoch + (b + 1) / n_batches, 4), **since.row(),
                                       "lr": optimizer.param_groups[0]["lr"]}
                                self._record(self.step_log, row)
                                progress.line("reward learning step %d: %s", self.step, format_metrics(row, skip=("step",)))
                                since = _StepWindow()
                            if cfg.save_every and self.step % cfg.save_every == 0:
                                checkpoint(epoch, b + 1)
                            if on_step is not None:
                                on_step(self)
                        progress.update(advance=1, description=f"reward learning  loss {losses[-1]:.4f}")
                    metrics = {"epoch": epoch + 1, "step": self.step, "train_loss": sum(losses) / max(len(losses), 1)}
                    if epoch_stats.get("judged"):
                        metrics["train_accuracy"] = epoch_stats["correct"] / epoch_stats["judged"]
                    metrics["seconds"] = time.perf_counter() - t0
                    if evaluate_fn is not None and cfg.eval_every_epoch:
                        self._wrapped.eval()
                        if main:  # the held-out metrics go to the main process's rows only
                            with torch.no_grad():  # no autograd graph (or its memory) while evaluating
                                metrics.update(evaluate_fn(self.accelerator.unwrap_model(self._wrapped)))
                        self.accelerator.wait_for_everyone()
                    self.history.append(metrics)
                    self._record(self.epoch_log, metrics)
                    progress.line("reward learning epoch %d: %s", epoch + 1, format_metrics(metrics, skip=("epoch",)))
                    checkpoint(epoch + 1, 0)
        finally:
            self.trackers.close()
        # Without accelerate's mixed-precision forward wrapper: the model then scores alike
        # whether it was just trained or loaded from its folder (align's r_φ on resume).
        self.model = self.accelerator.unwrap_model(self._wrapped, keep_fp32_wrapper=False)
        if cfg.gradient_checkpointing:
            _set_checkpointing(self.model.backbone, False)
        self.model.eval()
        return self.history
