"""The policy training engine: batch -> rewards -> signal -> loss -> step, for every objective.

One iteration (the objective, a plug-in from :mod:`tokenalign.objectives`, decides the
parts marked *):

1. **batch***: by default ``samples_per_prompt`` responses for this iteration's prompts,
   sampled with the KV cache; the policy's log-probs (the behaviour policy) come from the
   sampler's own logits, and one no-grad forward pass each gives the reference's
   log-probs and, for objectives with a value model, the values, all computed once per
   rollout (offline objectives return a batch of their dataset instead);
2. **rewards**: the reward source scores the samples (a sequence score, and per-token
   rewards when it has them) and :func:`place_rewards` puts them on the tokens;
3. **signal***: advantages (GAE, r_t / reward-to-go, leave-one-out, importance weights
   toward a target distribution, ...);
4. **loss*** and **step**: the objective cuts the update into optimizer steps and each
   step into chunks of rows (gradient accumulation: the same gradient as the whole step).

accelerate owns devices, mixed precision and distribution: each process samples its
share of the prompts and gradients are averaged by DDP. Checkpoints are atomic folders;
everything random derives from (seed, iteration), so a resumed run continues exactly.
Each iteration's metrics row goes to metrics.jsonl, the ``report_to`` trackers and one
log line.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import torch

from tokenalign.objectives import Chunk, Objective, token_kl
from tokenalign.objectives.losses import masked_mean
from tokenalign.policy.config import TrainConfig
from tokenalign.policy.rewards import RewardSource, place_rewards, segment_ends
from tokenalign.policy.trunk import Trunk, adapters_below, same_trunk
from tokenalign.rollout.batch import Rollout, TokenBatch, build_token_batch, token_logprobs
from tokenalign.rollout.generate import Sample, SamplingConfig, generate
from tokenalign.utils.logging import TrainingProgress
from tokenalign.utils.metrics import MetricsWriter, format_metrics
from tokenalign.utils.kernels import fused_optimizer_kwargs, use_fast_kernels
from tokenalign.utils.models import ensure_pad_token

log = logging.getLogger(__name__)

__all__ = ["Rollout", "PolicyTrainer"]


class PolicyTrainer:
    """Trains ``policy`` with ``config.objective`` on prompts (or on the objective's offline ``data``).

    ``data``: the rows of objectives that train on a dataset instead of the policy's
    samples (wmle: (prompt, response) pairs; phf-*: scored documents), as built by the
    objective's ``training_data``.
    """

    def __init__(
        self,
        config: TrainConfig,
        policy,
        tokenizer,
        reward_source: RewardSource,
        train_prompts: Sequence[str],
        ref_policy=None,
        value_model=None,
        stop: Sequence[str] = (),
        evaluate_fn: Callable[["PolicyTrainer"], dict[str, float]] | None = None,
        data: Sequence[Any] = (),
        out_dir: str | Path | None = None,
    ) -> None:
        from tokenalign.config import to_dict
        from tokenalign.utils.accel import make_accelerator
        from tokenalign.utils.tracking import Trackers, accelerator_kwargs, resolve_report_to

        config.validate()
        self.cfg = config
        report_to = resolve_report_to(config.report_to)
        self.accelerator = make_accelerator(config.mixed_precision, **accelerator_kwargs(report_to, out_dir))
        self.trackers = Trackers(self.accelerator, report_to, out_dir, to_dict(config) if report_to else {})
        self.tokenizer = ensure_pad_token(tokenizer)
        self.reward_source = reward_source
        self.train_prompts = list(train_prompts)
        self.data = list(data)
        self.objective: Objective = config.objective_class(config, config.objective_settings)
        self.stop = list(stop)
        self.evaluate_fn = evaluate_fn
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.metrics = None  # the run's metrics.jsonl (the main process writes), when it has a folder
        if self.out_dir is not None:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            self.metrics = MetricsWriter(self.out_dir / "metrics.jsonl", self.accelerator.is_main_process)
        self.iteration = 0
        self.samples_seen = 0
        self.tokens_seen = 0
        self.kl_exceeded = 0  # iterations whose rollout KL exceeded cfg.stop_kl
        self.stopped_early: dict[str, Any] | None = None  # {"iteration", "reason"} once stop_kl ended the run
        needs_value = self.objective.needs_value_model
        if needs_value and value_model is None:
            raise ValueError(f"objective {config.objective} needs a value model")
        if not needs_value:
            value_model = None
        n = self.accelerator.num_processes
        if config.sampling.backend == "vllm" and self.accelerator.distributed_type.name in ("FSDP", "DEEPSPEED"):
            from tokenalign.errors import ConfigError

            raise ConfigError(f"sampling.backend: vllm runs with one process per device (DDP), not under "
                              f"{self.accelerator.distributed_type.name}: its weight sync reads whole parameters")
        if config.prompts_per_iteration % n:
            raise ValueError(f"prompts_per_iteration {config.prompts_per_iteration} must divide over {n} processes")

        for model in (policy, ref_policy, value_model):
            if model is not None:
                use_fast_kernels(model)
        groups = [{"params": [p for p in policy.parameters() if p.requires_grad], "lr": config.lr}]
        if value_model is not None:
            groups.append({"params": [p for p in value_model.parameters() if p.requires_grad], "lr": self.objective.value_lr()})
        optimizer = torch.optim.AdamW(groups, weight_decay=config.weight_decay, **fused_optimizer_kwargs(self.accelerator.device))
        # Sampling and scoring run in eval mode, without dropout, so recorded log-probs equal a
        # fresh forward pass; so does training, so the first PPO epoch sees ratio 1 exactly.
        policy.eval()
        if value_model is not None:
            value_model.eval()
            self.policy, self.value_model, self.optimizer = self.accelerator.prepare(policy, value_model, optimizer)
        else:
            self.policy, self.optimizer = self.accelerator.prepare(policy, optimizer)
            self.value_model = None
        self.ref_policy = ref_policy.to(self.accelerator.device).eval() if ref_policy is not None else None
        self._shared_trunk: bool | None = None  # does the value model share the policy's frozen trunk?
        if self.ref_policy is not None:
            self.ref_policy.requires_grad_(False)
        self.objective.setup(self)

    # ---- helpers -----------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return self.accelerator.device

    @property
    def unwrapped_policy(self):
        return self.accelerator.unwrap_model(self.policy)

    def ref_logprobs(self, batch: TokenBatch, trunk: Trunk | None = None) -> torch.Tensor:
        """Reference log-probs: a frozen copy, or the policy with its LoRA adapters off (from
        ``trunk``, the states of its adapter-free lower blocks, when given)."""
        t = self.cfg.sampling.temperature
        if self.ref_policy is not None:
            return token_logprobs(self.ref_policy, batch, temperature=t)["logprobs"]
        with self.unwrapped_policy.disable_adapter():
            return token_logprobs(self.unwrapped_policy, batch, temperature=t, trunk=trunk)["logprobs"]

    def iteration_prompts(self, iteration: int) -> list[str]:
        """This process's prompts of an iteration: a seeded permutation per pass over the data."""
        return self.iteration_rows(self.train_prompts, iteration)

    def iteration_rows(self, pool: Sequence, iteration: int) -> list:
        """Rows ``iteration * per ... (iteration + 1) * per`` of the pool's seeded order (a new
        permutation for each pass over it), this process's share of them."""
        per, n = self.cfg.prompts_per_iteration, len(pool)
        orders: dict[int, list[int]] = {}  # one permutation per pass touched
        chosen = []
        for k in range(iteration * per, (iteration + 1) * per):
            epoch, pos = divmod(k, n)
            if epoch not in orders:
                g = torch.Generator().manual_seed(self.cfg.seed * 100_003 + epoch)
                orders[epoch] = torch.randperm(n, generator=g).tolist()
            chosen.append(pool[orders[epoch][pos]])
        return chosen[self.accelerator.process_index :: self.accelerator.num_processes]

    def sample(self, prompts: Sequence[str], seed: int, **overrides: Any) -> list[Sample]:
        """Sample one response per prompt from the current policy (eval mode, KV cache).
        With ``sampling.backend: vllm`` the policy samples on its colocated vLLM engine; another
        ``model`` (a proposal, the reference) on the HF sampler, so one engine is ever built."""
        model = overrides.pop("model", None) or self.unwrapped_policy
        if model is not self.unwrapped_policy:
            overrides.setdefault("backend", "hf")
        cfg = SamplingConfig.of(self.cfg.sampling, stop=self.stop, seed=seed, **overrides)
        return generate(model, self.tokenizer, prompts, cfg, progress=False)

    def sync_sampler(self) -> None:
        """Give the vLLM engine the policy's current weights (``sampling.backend: vllm``; called
        after every optimizer step, so every rollout samples the policy being trained)."""
        if self.cfg.sampling.backend == "vllm":
            from tokenalign.rollout.vllm_engine import sync_weights

            sync_weights(self.unwrapped_policy)

    def tensor_rows(self, rows: Sequence[Sequence[float]], width: int) -> torch.Tensor:
        """Ragged per-token rows as a ``[len(rows), width]`` fp32 tensor on the device (zero-padded)."""
        out = torch.zeros((len(rows), width), dtype=torch.float32)
        for i, r in enumerate(rows):
            r = list(r)[:width]
            out[i, : len(r)] = torch.tensor(r, dtype=torch.float32)
        return out.to(self.device)

    def length_chunks(self, batch: TokenBatch) -> list[torch.Tensor]:
        """Row indices in chunks of ``update_batch_size``, rows of similar prompt and then
        response length together (each chunk is trimmed to its longest prompt and response:
        ~20% fewer positions than response-length order on pep8 rollouts)."""
        n = batch.response_mask.shape[0]
        chunk = self.cfg.update_batch_size or n
        prompt_len = batch.attention_mask[:, : batch.prompt_width].sum(dim=1).cpu()
        response_len = batch.response_mask.sum(dim=1).cpu()
        order = torch.argsort(prompt_len * (batch.response_mask.shape[1] + 1) + response_len, stable=True)
        return [order[i : i + chunk] for i in range(0, n, chunk)]

    def chunked(self, fn: Callable[..., torch.Tensor], batch: TokenBatch, trunk: Trunk | None = None) -> torch.Tensor:
        """``fn`` (a per-token forward, ``[b, w]``) over length-sorted, trimmed chunks of the
        batch, reassembled as ``[B, R]`` fp32 (zeros on padding); with ``trunk`` (its states on
        ``batch``) each chunk's part is passed as ``fn(sub, trunk=...)``."""
        out = torch.zeros(batch.response_mask.shape, dtype=torch.float32, device=self.device)
        for idx in self.length_chunks(batch):
            idx = idx.to(self.device)
            sub, width = batch.rows(idx).trimmed()
            part = fn(sub) if trunk is None else fn(sub, trunk=trunk.rows(batch, idx, sub))
            out[idx, :width] = part.float()
        return out

    # ---- the four steps ---------------------------------------------------------------
    @torch.no_grad()
    def make_rollout(self, samples: Sequence[Sample], sampled_by: str | None = None) -> Rollout:
        """Tensors, log-probs, values and placed rewards of sampled (or dataset) responses.

        ``sampled_by`` ("policy" or "proposal") says whose log-probs the samples carry
        (``Sample.logprobs``, recorded by the sampler at the sampling temperature): those are
        used instead of a second forward pass of that model. They are the probabilities the
        samples were actually drawn with (under mixed precision the policy samples with
        autocast, as it trains; the reference is scored under the same autocast). Samples of
        the vLLM backend are the exception: the policy's log-probs are recomputed by the
        trainer's own forward pass (vLLM's kernels and precision differ; its recorded
        log-probs only feed ``sampler_logprob_gap``).
        """
        cfg = self.cfg
        pad = self.tokenizer.pad_token_id
        batch = build_token_batch([s.prompt_ids for s in samples], [s.generated_ids for s in samples], pad).to(self.device)
        width = batch.response_mask.shape[1]
        t = cfg.sampling.temperature
        recorded = None
        if sampled_by is not None and samples and all(s.logprobs is not None for s in samples):
            recorded = self.tensor_rows([s.logprobs for s in samples], width)
        policy_recorded = recorded if sampled_by == "policy" and cfg.sampling.backend != "vllm" else None
        with self.accelerator.autocast():
            trunks = self.trunks(batch)
            ref = self.chunked(self.ref_logprobs, batch, trunks.reference)
            if policy_recorded is not None:
                logprobs = policy_recorded
            else:
                logprobs = self.chunked(lambda b, trunk=None: token_logprobs(self.policy, b, temperature=t, trunk=trunk)
                                        ["logprobs"], batch, trunks.policy)
            values = self.chunked(self.value_model, batch, trunks.value) if self.value_model is not None else None
            extra = self.objective.rollout_extras(self, batch, recorded, sampled_by)
        out = self.reward_source(samples)
        scores = torch.tensor(out.scores, dtype=torch.float32, device=self.device)
        token_rewards = self.tensor_rows(out.token_rewards, width) if out.token_rewards is not None else None
        seg = None
        if cfg.reward.placement == "segment":
            seg = self.tensor_rows([segment_ends(self.tokenizer, s.generated_ids, cfg.reward.segment, len(s.healed))
                                   for s in samples], width) > 0
        rewards = place_rewards(cfg.reward.placement, batch.response_mask, scores, token_rewards, seg)
        return Rollout(list(samples), batch, logprobs.float(), ref.float(), rewards, scores, token_rewards,
                       values.float() if values is not None else None, list(out.details), extra, trunks=trunks)

    def rollout(self, prompts: Sequence[str], seed: int) -> Rollout:
        """``samples_per_prompt`` samples of each prompt (from the objective's sampler: the
        policy, or offline DPG's proposal), scored, as a rollout."""
        return self.objective.sample_rollout(self, prompts, seed)

    def advantages(self, ro: Rollout) -> dict[str, torch.Tensor]:
        """The objective's training signal of a rollout (``advantages``, and e.g. ``returns``)."""
        return self.objective.signal(ro, self.iteration)

    def trunks(self, batch: TokenBatch) -> "Trunks":
        """The frozen lower blocks run once on a rollout's ``batch``, for the rollout's passes
        (reference, value) and every update pass to start above them (``reuse_frozen_trunk``;
        one process; None where a model has no frozen blocks to reuse: ``policy/trunk.py``).
        The value model shares the policy's trunk when its lower blocks hold the same weights
        (one base), and so does the reference (the policy with its adapters off) when no
        adapter sits below the trunk's top."""
        if not self.cfg.reuse_frozen_trunk or self.accelerator.num_processes > 1:
            return Trunks(None, None, None)
        rows = self.cfg.update_batch_size
        with self.accelerator.autocast():
            policy = Trunk.of(self.policy, batch, rows)
            value = None
            if self.value_model is not None:
                backbone = self.accelerator.unwrap_model(self.value_model).backbone
                if policy is not None and self._value_shares_trunk(backbone, policy.blocks):
                    value = policy
                else:
                    value = Trunk.of(backbone, batch, rows)
        reference = None
        if policy is not None and self.ref_policy is None and not adapters_below(self.unwrapped_policy, policy.blocks):
            reference = policy
        return Trunks(policy, value, reference)

    def _value_shares_trunk(self, backbone, blocks: int) -> bool:
        """Whether the value model's lower blocks equal the policy's (checked once: they are frozen)."""
        if self._shared_trunk is None:
            self._shared_trunk = same_trunk(self.unwrapped_policy, backbone, blocks)
            log.info("value model %s the policy's frozen trunk", "shares" if self._shared_trunk else "does not share")
        return self._shared_trunk

    def update(self, ro: Rollout) -> dict[str, float]:
        """Optimise on one rollout; returns the mean over optimizer steps of each statistic.

        The objective cuts the update into steps (PPO: ``ppo.epochs`` passes over shuffled
        minibatches; the others: one step on the whole rollout) and each step into chunks
        of rows, computed with gradient accumulation so that the gradient is exactly the
        whole step's.
        """
        import contextlib

        cfg, acc, objective = self.cfg, self.accelerator, self.objective
        signal = self.advantages(ro)
        steps = objective.update_steps(self, ro)
        temperature = objective.update_temperature()
        # the rollout's trunks (the frozen blocks did not change since), else computed now
        policy_trunk, value_trunk, _ = ro.trunks if ro.trunks is not None else self.trunks(ro.batch)
        ro.trunks = None  # this update is their last use: not held while the next rollout is made
        sums: dict[str, float] = {}
        for chunks in steps:
            rows = sum(len(c) for c in chunks)
            tokens = sum(int(ro.batch.response_mask[c.to(self.device)].sum()) for c in chunks)
            stats: dict[str, float] = {}
            for j, idx in enumerate(chunks):
                idx = idx.to(self.device)
                full = ro.batch.rows(idx)
                sub, width = full.trimmed()  # no compute on padding columns
                mask = sub.response_mask
                last = j == len(chunks) - 1
                value_model = self.value_model
                if value_trunk is not None:
                    value_model = functools.partial(value_model, trunk=value_trunk.rows(ro.batch, idx, sub))
                with contextlib.nullcontext() if last else acc.no_sync(self.policy), acc.autocast():
                    out = token_logprobs(self.policy, sub, with_entropy=True, temperature=temperature,
                                         trunk=policy_trunk.rows(ro.batch, idx, sub) if policy_trunk is not None else None)
                    chunk = Chunk(sub, idx, width, out["logprobs"], out["neg_entropy"],
                                  token_share=float(mask.sum()) / max(tokens, 1), row_share=len(idx) / rows,
                                  value_model=value_model)
                    loss, chunk_stats = objective.loss(chunk, ro, signal)
                    acc.backward(loss)
                for key, v in chunk_stats.items():
                    stats[key] = stats.get(key, 0.0) + v
                stats["loss"] = stats.get("loss", 0.0) + loss.item()
                stats["entropy"] = stats.get("entropy", 0.0) - chunk.token_share * masked_mean(chunk.neg_entropy.detach(), mask).item()
            if cfg.grad_clip:
                params = [p for grp in self.optimizer.param_groups for p in grp["params"]]
                stats["grad_norm"] = float(acc.clip_grad_norm_(params, cfg.grad_clip))
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
            self.sync_sampler()
            for key, v in stats.items():
                sums[key] = sums.get(key, 0.0) + v
        return {k: v / max(len(steps), 1) for k, v in sums.items()}

    # ---- the loop ----------------------------------------------------------------------
    @property
    def done(self) -> bool:
        """All configured iterations ran, or ``stop_kl`` ended the run."""
        return self.iteration >= self.cfg.iterations or self.stopped_early is not None

    def _check_kl(self, row: dict[str, Any]) -> None:
        """Count an iteration whose rollout KL exceeds ``stop_kl``; stop the run at the
        ``stop_kl_patience``-th (the row's ``kl`` is reduced over processes: all agree)."""
        cfg = self.cfg
        if not cfg.stop_kl or row.get("kl", 0.0) <= cfg.stop_kl:
            return
        self.kl_exceeded += 1
        if self.kl_exceeded >= cfg.stop_kl_patience:
            reason = (f"rollout KL {row['kl']:.3g} > stop_kl {cfg.stop_kl:g} "
                      f"({self.kl_exceeded} iteration(s) over it, patience {cfg.stop_kl_patience})")
            self.stopped_early = {"iteration": self.iteration, "reason": reason}
            log.info("stopping at iteration %d of %d: %s", self.iteration, cfg.iterations, reason)

    def record(self, row: dict[str, Any]) -> None:
        """Write a metrics row (it carries its ``iteration``): metrics.jsonl and the trackers
        (main process; other processes do nothing)."""
        if not self.accelerator.is_main_process:
            return
        if self.metrics is not None:
            self.metrics.append(row)
        self.trackers.log(row, step=row["iteration"])

    def _rollout_stats(self, ro: Rollout, seconds: float) -> dict[str, float]:
        mask = ro.batch.response_mask
        # Rollouts of the policy: KL to the reference (zero for a corpus batch, not reported).
        kl_seq = token_kl(ro, "k1").sum(dim=1)
        lengths = mask.sum(dim=1).float()
        local = torch.stack([ro.scores.mean(), kl_seq.mean(), lengths.mean(), lengths.sum(),
                             torch.tensor(float(len(ro.samples)), device=self.device)])
        if ro.token_rewards is not None:
            local = torch.cat([local, ((ro.token_rewards * mask).sum() / mask.sum().clamp(min=1)).view(1)])
        total = self.accelerator.reduce(local, reduction="sum")
        n = self.accelerator.num_processes
        stats = {"reward": float(total[0] / n), "kl": float(total[1] / n), "response_tokens": float(total[2] / n),
                 "sampled_tokens": float(total[3]), "samples": float(total[4])}
        if ro.token_rewards is not None:
            stats["token_reward"] = float(total[5] / n)
        if not self.objective.reports_kl:
            del stats["kl"]
        stats.update(self.objective.extra_stats())
        if self.cfg.sampling.backend == "vllm" and ro.samples and all(s.logprobs is not None for s in ro.samples):
            # vLLM's log-probs of its samples vs the trainer's: ~0 when the weights are in sync (this process's)
            gap = (self.tensor_rows([s.logprobs for s in ro.samples], mask.shape[1]) - ro.logprobs).abs()
            stats["sampler_logprob_gap"] = float((gap * mask).sum() / mask.sum().clamp(min=1))
        mis = [getattr(d, "misalignment", None) for d in ro.details]
        if mis and all(m is not None for m in mis):
            stats["train_misalignment"] = float(sum(mis) / len(mis))  # this process's share
        return stats

    def fit(
        self,
        resume_from: str | Path | None = None,
        on_iteration: Callable[["PolicyTrainer"], None] | None = None,
        until: int | None = None,
    ) -> list[dict]:
        """Run the configured iterations (from a checkpoint if given), or up to iteration
        ``until``; returns the metrics rows of this call."""
        cfg, acc = self.cfg, self.accelerator
        if resume_from is not None and (Path(resume_from) / "state.json").is_file():
            self.load_state(resume_from)
        self.trackers.start(self.iteration)
        self.objective.on_fit_start(self)
        rows: list[dict] = []
        stop_at = cfg.iterations
        if until is not None:
            stop_at = min(stop_at, until)
        elif cfg.stop_after_iterations:
            stop_at = min(stop_at, self.iteration + cfg.stop_after_iterations)
        with TrainingProgress(log, cfg.objective, cfg.iterations, self.iteration, cfg.progress and acc.is_main_process) as bar:
            while self.iteration < stop_at and self.stopped_early is None:
                t0 = time.perf_counter()
                ro = self.objective.batch(self, self.iteration)
                t_sample = time.perf_counter() - t0
                stats = self.update(ro)
                self.iteration += 1
                self.objective.after_update(self)
                row = {"iteration": self.iteration, **self._rollout_stats(ro, t_sample), **stats}
                self.samples_seen += int(row["samples"])
                self.tokens_seen += int(row["sampled_tokens"])
                row.update(samples_seen=self.samples_seen, tokens_seen=self.tokens_seen,
                           rollout_seconds=round(t_sample, 3), seconds=round(time.perf_counter() - t0, 3))
                self._check_kl(row)
                last = self.iteration == cfg.iterations or self.stopped_early is not None
                if self.evaluate_fn is not None and (self.iteration % max(cfg.eval.every, 1) == 0 or last):
                    if acc.is_main_process:
                        row.update({f"eval_{k}": v for k, v in self.evaluate_fn(self).items()})
                    acc.wait_for_everyone()
                if acc.is_main_process:
                    rows.append(row)
                    self.record(row)
                    bar.update(completed=self.iteration,
                               description=f"{cfg.objective} reward {row['reward']:.3f} kl {row.get('kl', 0.0):.2f}")
                    bar.line("iteration %d: %s", self.iteration, format_metrics(row))
                if self.out_dir is not None and cfg.save_every and (self.iteration % cfg.save_every == 0 or last):
                    self.save_state(self.out_dir / "checkpoint")
                if on_iteration is not None:
                    on_iteration(self)
        return rows

    def close(self) -> None:
        """End a run cleanly: finish its trackers, wait for every process, then destroy the
        process group (a gloo group alive at interpreter exit can abort the process)."""
        import torch.distributed as dist

        self.trackers.close()
        self.accelerator.wait_for_everyone()
        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()

    # ---- checkpoints -------------------------------------------------------------------
    def save_model(self, path: str | Path) -> Path:
        """Write the trained policy (safetensors), its tokenizer and config to ``path``,
        atomically: a folder ``from_pretrained`` and ``tokenalign eval`` load as it is (a
        LoRA policy writes its adapters, which load onto their base model). Every process
        calls it: accelerate gathers the weights (FSDP, ZeRO-3), the main process writes."""
        from tokenalign.utils.checkpoint import gathered_state_dict
        from tokenalign.utils.io import atomic_path

        path = Path(path)
        state = gathered_state_dict(self.accelerator, self.policy)
        if self.accelerator.is_main_process:
            with atomic_path(path) as tmp:
                self._save_policy(tmp, state)
        self.accelerator.wait_for_everyone()
        return path

    def _save_policy(self, folder: Path, state_dict: dict[str, torch.Tensor]) -> None:
        self.unwrapped_policy.save_pretrained(folder, state_dict=state_dict, safe_serialization=True)
        self.tokenizer.save_pretrained(folder)

    def save_state(self, path: str | Path) -> Path:
        """Atomic checkpoint folder (:mod:`tokenalign.utils.checkpoint`): policy/, value/,
        optimizer.pt, the objective's state, state.json. Every process calls it."""
        from tokenalign.utils.checkpoint import save_distributed_checkpoint

        acc = self.accelerator
        models = {"policy": (self.policy, self._save_policy)}
        if self.value_model is not None:
            value = acc.unwrap_model(self.value_model)
            models["value"] = (self.value_model, lambda folder, state_dict: value.save_pretrained(folder, state_dict))
        state = {"iteration": self.iteration, "samples_seen": self.samples_seen, "tokens_seen": self.tokens_seen,
                 "objective": self.cfg.objective, "kl_exceeded": self.kl_exceeded, "stopped_early": self.stopped_early}
        return save_distributed_checkpoint(acc, path, models, self.optimizer, None, state, extra=self.objective.save)

    def load_state(self, path: str | Path) -> None:
        """Restore optimizer, RNG, counters and the objective's state (weights are loaded by
        whoever built the models, from ``path/policy`` and ``path/value``)."""
        from tokenalign.utils.checkpoint import load_checkpoint

        path = Path(path)
        prepared = [m for m in (self.policy, self.value_model) if m is not None]
        state = load_checkpoint(path, self.optimizer, None, self.accelerator, prepared)
        self.iteration, self.samples_seen, self.tokens_seen = state["iteration"], state["samples_seen"], state["tokens_seen"]
        self.kl_exceeded, self.stopped_early = state.get("kl_exceeded", 0), state.get("stopped_early")
        self.objective.load(path)
        if self.metrics is not None:
            self.metrics.trim(self.iteration)  # rows of iterations after the checkpoint (written before a kill) are redone
        log.info("resumed from %s at iteration %d", path, self.iteration)


class Trunks(NamedTuple):
    """The kept lower-block states on one rollout batch of the policy, the value model and
    the reference (the same object where they share one; None where not reused)."""

    policy: Trunk | None
    value: Trunk | None
    reference: Trunk | None
