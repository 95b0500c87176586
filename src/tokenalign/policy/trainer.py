"""The policy training engine: rollout -> rewards -> advantages -> loss, for every objective.

One iteration:

1. **rollout**: sample ``samples_per_prompt`` responses for this iteration's prompts with
   the KV cache; the policy's log-probs (the behaviour policy) come from the sampler's own
   logits, and one no-grad forward pass each gives the reference's log-probs and, for PPO,
   the values — all computed once per rollout;
2. **rewards**: the reward source scores the samples (a sequence score, and per-token
   rewards when it has them) and :func:`place_rewards` puts them on the tokens;
3. **advantages** by the objective's estimator (GAE, r_t / reward-to-go, leave-one-out);
4. **update**: ``ppo.epochs`` passes over shuffled minibatches for PPO, one pass for the
   others.

Distribution matching (``dpg`` / ``fdpg`` / ``cdpg``) is step 3 with a different signal:
per-sequence importance weights toward an energy-based target instead of rewards. The PHF
objectives (``phf-*``) replace step 1 by a batch of the scored corpus (offline data).

accelerate owns devices, mixed precision and distribution: each process samples its
share of the prompts and gradients are averaged by DDP. Checkpoints are atomic folders;
everything random derives from (seed, iteration), so a resumed run continues exactly.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from tokenalign.objectives.advantages import gae, kl_penalty, reward_to_go, rloo_baseline, whiten
from tokenalign.policy.config import DM_OBJECTIVES, PHF_OBJECTIVES, TrainConfig
from tokenalign.objectives.losses import (
    guidance_weights,
    masked_mean,
    ppo_policy_loss,
    ppo_value_loss,
    reinforce_loss,
    sequence_pg_loss,
    weighted_mle_loss,
)
from tokenalign.objectives.dm import DMState as _DMState
from tokenalign.objectives.phf import phf_objective_loss
from tokenalign.policy.rewards import RewardSource, place_rewards, segment_ends
from tokenalign.rollout.batch import TokenBatch, build_token_batch, token_logprobs
from tokenalign.rollout.generate import Sample, SamplingConfig, generate
from tokenalign.utils.io import append_jsonl, atomic_path
from tokenalign.utils.kernels import fused_optimizer_kwargs, use_fast_kernels

log = logging.getLogger(__name__)

__all__ = ["Rollout", "PolicyTrainer"]


@dataclasses.dataclass
class Rollout:
    """Everything one update needs, computed once per rollout (tensors on the device)."""

    samples: list[Sample]
    batch: TokenBatch
    logprobs: torch.Tensor  # [B, R] behaviour policy
    ref_logprobs: torch.Tensor  # [B, R]
    rewards: torch.Tensor  # [B, R] placed rewards, before the KL penalty
    scores: torch.Tensor  # [B] sequence scores
    token_rewards: torch.Tensor | None  # [B, R] the source's per-token rewards, if any
    values: torch.Tensor | None  # [B, R] PPO values
    details: list[Any]
    extra: dict[str, torch.Tensor] = dataclasses.field(default_factory=dict)  # objective-specific tensors


class PolicyTrainer:
    """Trains ``policy`` with ``config.objective`` on prompts (or, for wmle, supervised data)."""

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
        supervised: Sequence[tuple[str, str]] = (),
        out_dir: str | Path | None = None,
        documents: Sequence[Any] = (),
    ) -> None:
        from tokenalign.utils.accel import make_accelerator

        config.validate()
        self.cfg = config
        self.accelerator = make_accelerator(config.mixed_precision)
        self.tokenizer = tokenizer
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        self.reward_source = reward_source
        self.train_prompts = list(train_prompts)
        self.supervised = list(supervised)
        self.documents = list(documents)  # phf-*: ScoredDocument rows
        if config.objective in PHF_OBJECTIVES and not self.documents:
            raise ValueError(f"objective {config.objective} trains on a scored corpus: pass documents")
        self.stop = list(stop)
        self.evaluate_fn = evaluate_fn
        self.out_dir = Path(out_dir) if out_dir is not None else None
        if self.out_dir is not None:
            self.out_dir.mkdir(parents=True, exist_ok=True)
        self.iteration = 0
        self.samples_seen = 0
        self.tokens_seen = 0
        needs_value = config.objective in ("ppo", "phf-awr")
        if needs_value and value_model is None:
            raise ValueError(f"objective {config.objective} needs a value model")
        if not needs_value:
            value_model = None
        n = self.accelerator.num_processes
        if config.prompts_per_iteration % n:
            raise ValueError(f"prompts_per_iteration {config.prompts_per_iteration} must divide over {n} processes")

        for model in (policy, ref_policy, value_model):
            if model is not None:
                use_fast_kernels(model)
        groups = [{"params": [p for p in policy.parameters() if p.requires_grad], "lr": config.lr}]
        if value_model is not None:
            groups.append({"params": list(value_model.parameters()), "lr": config.ppo.value_lr or config.lr})
        optimizer = torch.optim.AdamW(groups, weight_decay=config.weight_decay, **fused_optimizer_kwargs(self.accelerator.device))
        # Sampling and scoring run without dropout (SPEC section 5); so does training, so the
        # first PPO epoch sees ratio 1 exactly.
        policy.eval()
        if value_model is not None:
            value_model.eval()
            self.policy, self.value_model, self.optimizer = self.accelerator.prepare(policy, value_model, optimizer)
        else:
            self.policy, self.optimizer = self.accelerator.prepare(policy, optimizer)
            self.value_model = None
        self.ref_policy = ref_policy.to(self.accelerator.device).eval() if ref_policy is not None else None
        if self.ref_policy is not None:
            self.ref_policy.requires_grad_(False)
        self.dm = _DMState(config, self.unwrapped_policy, self.accelerator) if config.objective in DM_OBJECTIVES else None

    # ---- helpers -----------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return self.accelerator.device

    @property
    def unwrapped_policy(self):
        return self.accelerator.unwrap_model(self.policy)

    def ref_logprobs(self, batch: TokenBatch) -> torch.Tensor:
        """Reference log-probs: a frozen copy, or the policy with its LoRA adapters off."""
        t = self.cfg.sampling.temperature
        if self.ref_policy is not None:
            return token_logprobs(self.ref_policy, batch, temperature=t)["logprobs"]
        with self.unwrapped_policy.disable_adapter():
            return token_logprobs(self.unwrapped_policy, batch, temperature=t)["logprobs"]

    def iteration_prompts(self, iteration: int) -> list[str]:
        """This process's prompts of an iteration: a seeded permutation per pass over the data."""
        return self._iteration_rows(self.train_prompts, iteration)

    def _iteration_rows(self, pool: Sequence, iteration: int) -> list:
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
        """Sample one response per prompt from the current policy (eval mode, KV cache)."""
        s = self.cfg.sampling
        model = overrides.pop("model", None) or self.unwrapped_policy
        cfg = SamplingConfig(max_new_tokens=s.max_new_tokens, temperature=s.temperature, top_k=s.top_k, top_p=s.top_p,
                             batch_size=s.batch_size, stop=self.stop, seed=seed)
        cfg = dataclasses.replace(cfg, **overrides)
        return generate(model, self.tokenizer, prompts, cfg, progress=False)

    def _tensor_rows(self, rows: Sequence[Sequence[float]], width: int) -> torch.Tensor:
        out = torch.zeros((len(rows), width), dtype=torch.float32)
        for i, r in enumerate(rows):
            r = list(r)[:width]
            out[i, : len(r)] = torch.tensor(r, dtype=torch.float32)
        return out.to(self.device)

    def _length_chunks(self, batch: TokenBatch) -> list[torch.Tensor]:
        """Row indices in chunks of ``update_batch_size``, rows of similar prompt and then
        response length together (each chunk is trimmed to its longest prompt and response:
        ~20% fewer positions than response-length order on pep8 rollouts)."""
        n = batch.response_mask.shape[0]
        chunk = self.cfg.update_batch_size or n
        prompt_len = batch.attention_mask[:, : batch.prompt_width].sum(dim=1).cpu()
        response_len = batch.response_mask.sum(dim=1).cpu()
        order = torch.argsort(prompt_len * (batch.response_mask.shape[1] + 1) + response_len, stable=True)
        return [order[i : i + chunk] for i in range(0, n, chunk)]

    def _chunked(self, fn: Callable[[TokenBatch], torch.Tensor], batch: TokenBatch) -> torch.Tensor:
        """``fn`` (a per-token forward, ``[b, w]``) over length-sorted, trimmed chunks of the
        batch, reassembled as ``[B, R]`` fp32 (zeros on padding)."""
        out = torch.zeros(batch.response_mask.shape, dtype=torch.float32, device=self.device)
        for idx in self._length_chunks(batch):
            idx = idx.to(self.device)
            sub, width = batch.rows(idx).trimmed()
            out[idx, :width] = fn(sub).float()
        return out

    # ---- the four steps ---------------------------------------------------------------
    @torch.no_grad()
    def make_rollout(self, samples: Sequence[Sample], sampled_by: str | None = None) -> Rollout:
        """Tensors, log-probs, values and placed rewards of sampled (or dataset) responses.

        ``sampled_by`` ("policy" or "proposal") says whose log-probs the samples carry
        (``Sample.logprobs``, recorded by the sampler at the sampling temperature): those are
        used instead of a second forward pass of that model. They are the probabilities the
        samples were actually drawn with (under mixed precision the policy samples with
        autocast, as it trains; the reference is scored under the same autocast).
        """
        cfg = self.cfg
        pad = self.tokenizer.pad_token_id
        batch = build_token_batch([s.prompt_ids for s in samples], [s.generated_ids for s in samples], pad).to(self.device)
        width = batch.response_mask.shape[1]
        t = cfg.sampling.temperature
        recorded = None
        if sampled_by is not None and samples and all(s.logprobs is not None for s in samples):
            recorded = self._tensor_rows([s.logprobs for s in samples], width)
        policy_recorded = recorded if sampled_by == "policy" else None
        with self.accelerator.autocast():
            ref = self._chunked(self.ref_logprobs, batch)
            if policy_recorded is not None:
                logprobs = policy_recorded
            else:
                logprobs = self._chunked(lambda b: token_logprobs(self.policy, b, temperature=t)["logprobs"], batch)
            values = self._chunked(self.value_model, batch) if self.value_model is not None else None
            extra = {}
            if self.dm is not None and self.dm.proposal is not None:  # offline DPG: q sampled them
                extra["proposal_logprobs"] = (recorded if sampled_by == "proposal" and recorded is not None else
                                              self._chunked(lambda b: token_logprobs(self.dm.proposal, b)["logprobs"], batch))
        out = self.reward_source(samples)
        scores = torch.tensor(out.scores, dtype=torch.float32, device=self.device)
        token_rewards = self._tensor_rows(out.token_rewards, width) if out.token_rewards is not None else None
        seg = None
        if cfg.reward.placement == "segment":
            seg = self._tensor_rows([segment_ends(self.tokenizer, s.generated_ids, cfg.reward.segment) for s in samples], width) > 0
        rewards = place_rewards(cfg.reward.placement, batch.response_mask, scores, token_rewards, seg)
        return Rollout(list(samples), batch, logprobs.float(), ref.float(), rewards, scores, token_rewards,
                       values.float() if values is not None else None, list(out.details), extra)

    def rollout(self, prompts: Sequence[str], seed: int) -> Rollout:
        k = self.cfg.samples_per_prompt
        inputs = [p for p in prompts for _ in range(k)]
        if self.dm is not None and self.dm.proposal is not None:
            return self.make_rollout(self.sample(inputs, seed, model=self.dm.proposal), sampled_by="proposal")
        return self.make_rollout(self.sample(inputs, seed), sampled_by="policy")

    def phf_rollout(self, iteration: int) -> Rollout:
        """A batch of the scored corpus as a rollout: documents sampled from nothing (the BOS
        token is their prompt), their token scores in ``extra["token_scores"]``."""
        from tokenalign.rollout.generate import encode_prompt

        docs = self._iteration_rows(self.documents, iteration)
        bos = encode_prompt(self.tokenizer, "")
        samples = [Sample("", d.text, d.ids, True, d.ids, bos) for d in docs]
        batch = build_token_batch([s.prompt_ids for s in samples], [s.generated_ids for s in samples],
                                  self.tokenizer.pad_token_id).to(self.device)
        width = batch.response_mask.shape[1]
        token_scores = self._tensor_rows([d.token_scores for d in docs], width)
        scores = torch.tensor([-d.score for d in docs], dtype=torch.float32, device=self.device)
        zeros = torch.zeros_like(token_scores)
        return Rollout(samples, batch, zeros, zeros, -token_scores, scores, -token_scores, None, [],
                       {"token_scores": token_scores})

    def advantages(self, ro: Rollout) -> dict[str, torch.Tensor]:
        """Per-objective training signal: ``advantages`` (and ``returns`` for PPO)."""
        cfg, mask = self.cfg, ro.batch.response_mask
        kl = kl_penalty(ro.logprobs, ro.ref_logprobs, mask, cfg.kl_estimator)
        if cfg.objective == "ppo":
            rewards = ro.rewards - cfg.kl_coef * kl
            if cfg.ppo.whiten_rewards:
                rewards = whiten(rewards, mask, shift_mean=False)
            adv, ret = gae(rewards, ro.values, mask, cfg.ppo.gamma, cfg.ppo.lam)
            if cfg.ppo.whiten_advantages:
                adv = whiten(adv, mask)
            return {"advantages": adv, "returns": ret}
        if cfg.objective == "reinforce":
            rewards = (ro.rewards - cfg.kl_coef * kl) * mask
            signal = reward_to_go(rewards, mask) if cfg.reward_to_go else rewards
            if cfg.reinforce_baseline == "mean":
                signal = (signal - masked_mean(signal, mask)) * mask
            elif cfg.reinforce_baseline == "whiten":
                signal = whiten(signal, mask)
            return {"advantages": signal}
        if cfg.objective == "rloo":
            seq = ro.scores - cfg.kl_coef * kl.sum(dim=1)
            return {"advantages": rloo_baseline(seq, cfg.samples_per_prompt)}
        if cfg.objective == "wmle":
            return {"advantages": guidance_weights(ro.token_rewards, mask, use_exp=cfg.wmle_exp, use_reward_to_go=cfg.reward_to_go)}
        if self.dm is not None:
            return {"advantages": self.dm.advantages(ro, self.iteration)}
        if cfg.objective in PHF_OBJECTIVES:
            return {"rewards": ro.rewards, "token_scores": ro.extra["token_scores"]}
        raise ValueError(f"unknown objective {cfg.objective!r}")

    def update(self, ro: Rollout) -> dict[str, float]:
        """Optimise on one rollout; returns the mean of each loss statistic.

        PPO: ``ppo.epochs`` passes over shuffled minibatches, one optimizer step each. Other
        objectives: one optimizer step on the whole rollout, computed in chunks of
        ``update_batch_size`` rows with gradient accumulation (weighted so the gradient is
        exactly the whole-batch one).
        """
        import contextlib

        cfg, acc = self.cfg, self.accelerator
        signal = self.advantages(ro)
        n = len(ro.samples)
        if cfg.objective == "ppo":
            g = torch.Generator().manual_seed(cfg.seed * 7919 + self.iteration)
            mb = cfg.ppo.minibatch_size
            steps = []
            for _ in range(cfg.ppo.epochs):
                order = torch.randperm(n, generator=g)
                steps += [[order[i : i + mb]] for i in range(0, n, mb)]
        else:
            steps = [self._length_chunks(ro.batch)]
        sums: dict[str, float] = {}
        for chunks in steps:
            rows = sum(len(c) for c in chunks)
            tokens = sum(int(ro.batch.response_mask[c.to(self.device)].sum()) for c in chunks)
            stats: dict[str, float] = {}
            for j, idx in enumerate(chunks):
                idx = idx.to(self.device)
                sub, width = ro.batch.rows(idx).trimmed()  # no compute on padding columns
                mask = sub.response_mask

                def cut(t: torch.Tensor) -> torch.Tensor:
                    return t[idx][:, :width]

                w_tok = float(mask.sum()) / max(tokens, 1)  # share of a token mean
                w_seq = len(idx) / rows  # share of a sequence mean
                last = j == len(chunks) - 1
                with contextlib.nullcontext() if last else acc.no_sync(self.policy), acc.autocast():
                    # A corpus is learned at temperature 1; rollouts at the temperature they were sampled at.
                    temperature = 1.0 if cfg.objective in PHF_OBJECTIVES else cfg.sampling.temperature
                    out = token_logprobs(self.policy, sub, with_entropy=True, temperature=temperature)
                    logp, neg_ent = out["logprobs"], out["neg_entropy"]
                    entropy_term = cfg.entropy_coef * masked_mean(neg_ent, mask) if cfg.entropy_coef else 0.0
                    if cfg.objective == "ppo":
                        values = self.value_model(sub)
                        ploss, clip_stats = ppo_policy_loss(logp, cut(ro.logprobs), cut(signal["advantages"]), mask, cfg.ppo.clip)
                        vloss = ppo_value_loss(values.float(), cut(ro.values), cut(signal["returns"]), mask, cfg.ppo.value_clip)
                        loss = ploss + cfg.ppo.value_coef * vloss + entropy_term
                        stats.update(clip_stats, policy_loss=ploss.item(), value_loss=vloss.item())
                    elif cfg.objective == "reinforce":
                        loss = w_tok * reinforce_loss(logp, cut(signal["advantages"]), mask, neg_ent, cfg.entropy_coef)
                    elif cfg.objective == "rloo" or self.dm is not None:
                        loss = w_seq * sequence_pg_loss(logp, signal["advantages"][idx], mask) + w_tok * entropy_term
                    elif cfg.objective in PHF_OBJECTIVES:
                        values = self.value_model(sub) if self.value_model is not None else None
                        phf_loss, phf_stats = phf_objective_loss(cfg, logp, cut(signal["rewards"]), cut(signal["token_scores"]),
                                                                 mask, values)
                        loss = w_tok * phf_loss
                        for key, v in phf_stats.items():
                            stats[key] = stats.get(key, 0.0) + w_tok * v
                    else:  # wmle
                        loss = w_seq * weighted_mle_loss(logp, cut(signal["advantages"]), mask)
                    acc.backward(loss)
                stats["loss"] = stats.get("loss", 0.0) + loss.item()
                stats["entropy"] = stats.get("entropy", 0.0) - w_tok * masked_mean(neg_ent.detach(), mask).item()
            if cfg.grad_clip:
                params = [p for grp in self.optimizer.param_groups for p in grp["params"]]
                stats["grad_norm"] = float(acc.clip_grad_norm_(params, cfg.grad_clip))
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
            for key, v in stats.items():
                sums[key] = sums.get(key, 0.0) + v
        return {k: v / max(len(steps), 1) for k, v in sums.items()}

    # ---- the loop ----------------------------------------------------------------------
    def _rollout_stats(self, ro: Rollout, seconds: float) -> dict[str, float]:
        mask = ro.batch.response_mask
        # Rollouts of the policy: KL to the reference (zero for a corpus batch, not reported).
        kl_seq = (kl_penalty(ro.logprobs, ro.ref_logprobs, mask, "k1")).sum(dim=1)
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
        if self.cfg.objective in PHF_OBJECTIVES:
            del stats["kl"]
        if self.dm is not None:
            stats.update(self.dm.last_stats)
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
        from rich.progress import Progress

        cfg, acc = self.cfg, self.accelerator
        if resume_from is not None and (Path(resume_from) / "state.json").is_file():
            self.load_state(resume_from)
        if self.dm is not None and self.dm.needs_lambda:
            self.dm.fit_lambda(self)
        rows: list[dict] = []
        stop_at = cfg.iterations
        if until is not None:
            stop_at = min(stop_at, until)
        elif cfg.stop_after_iterations:
            stop_at = min(stop_at, self.iteration + cfg.stop_after_iterations)
        with Progress(disable=not acc.is_main_process, transient=True) as bar:
            task = bar.add_task(f"{cfg.objective}", total=cfg.iterations, completed=self.iteration)
            while self.iteration < stop_at:
                t0 = time.perf_counter()
                if cfg.objective == "wmle":
                    ro = self.make_rollout(self._supervised_samples(self.iteration))
                elif cfg.objective in PHF_OBJECTIVES:
                    ro = self.phf_rollout(self.iteration)
                else:
                    seed = cfg.seed * 1_000_003 + self.iteration * 101 + acc.process_index
                    ro = self.rollout(self.iteration_prompts(self.iteration), seed)
                t_sample = time.perf_counter() - t0
                stats = self.update(ro)
                self.iteration += 1
                if self.dm is not None:
                    self.dm.after_update(self)
                row = {"iteration": self.iteration, **self._rollout_stats(ro, t_sample), **stats}
                self.samples_seen += int(row["samples"])
                self.tokens_seen += int(row["sampled_tokens"])
                row.update(samples_seen=self.samples_seen, tokens_seen=self.tokens_seen,
                           rollout_seconds=round(t_sample, 3), seconds=round(time.perf_counter() - t0, 3))
                if self.evaluate_fn is not None and (self.iteration % max(cfg.eval.every, 1) == 0 or self.iteration == cfg.iterations):
                    if acc.is_main_process:
                        row.update({f"eval_{k}": v for k, v in self.evaluate_fn(self).items()})
                    acc.wait_for_everyone()
                if acc.is_main_process:
                    rows.append(row)
                    if self.out_dir is not None:
                        append_jsonl(self.out_dir / "metrics.jsonl", row)
                    bar.update(task, completed=self.iteration,
                               description=f"{cfg.objective} reward {row['reward']:.3f} kl {row.get('kl', 0.0):.2f}")
                    log.info("iteration %d: %s", self.iteration, json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()}))
                if self.out_dir is not None and cfg.save_every and (self.iteration % cfg.save_every == 0 or self.iteration == cfg.iterations):
                    self.save_state(self.out_dir / "checkpoint")
                if on_iteration is not None:
                    on_iteration(self)
        return rows

    def _supervised_samples(self, iteration: int) -> list[Sample]:
        """wmle: this iteration's (prompt, response) rows as samples, seeded order per pass."""
        from tokenalign.rollout.generate import encode_prompt

        rows = self._iteration_rows(self.supervised, iteration)
        limit = self.cfg.sampling.max_new_tokens
        out = []
        for prompt, response in rows:
            ids = self.tokenizer(response, add_special_tokens=False)["input_ids"][:limit]
            out.append(Sample(prompt, self.tokenizer.decode(ids), ids, True, ids, encode_prompt(self.tokenizer, prompt)))
        return out

    def close(self) -> None:
        """End a distributed run cleanly: wait for every process, then destroy the process
        group (a gloo group alive at interpreter exit can abort the process)."""
        import torch.distributed as dist

        self.accelerator.wait_for_everyone()
        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()

    # ---- checkpoints -------------------------------------------------------------------
    def save_state(self, path: str | Path) -> Path:
        """Atomic checkpoint folder: policy/, value/, optimizer.pt, state.json."""
        from tokenalign.utils.checkpoint import rng_state

        path = Path(path)
        acc = self.accelerator
        acc.wait_for_everyone()
        if acc.is_main_process:
            with atomic_path(path) as tmp:
                tmp.mkdir(parents=True)
                self.unwrapped_policy.save_pretrained(tmp / "policy", safe_serialization=True)
                self.tokenizer.save_pretrained(tmp / "policy")
                if self.value_model is not None:
                    acc.unwrap_model(self.value_model).save_pretrained(tmp / "value")
                torch.save({"optimizer": self.optimizer.state_dict(), "rng": rng_state()}, tmp / "optimizer.pt")
                if self.dm is not None:
                    self.dm.save(tmp)
                state = {"iteration": self.iteration, "samples_seen": self.samples_seen, "tokens_seen": self.tokens_seen,
                         "objective": self.cfg.objective}
                (tmp / "state.json").write_text(json.dumps(state, indent=2) + "\n")
        acc.wait_for_everyone()
        return path

    def load_state(self, path: str | Path) -> None:
        """Restore optimizer, RNG and counters (weights are loaded by whoever built the
        models, from ``path/policy`` and ``path/value``)."""
        from tokenalign.utils.checkpoint import set_rng_state

        path = Path(path)
        blob = torch.load(path / "optimizer.pt", weights_only=True, map_location="cpu")
        self.optimizer.load_state_dict(blob["optimizer"])
        set_rng_state(blob["rng"])
        state = json.loads((path / "state.json").read_text())
        self.iteration, self.samples_seen, self.tokens_seen = state["iteration"], state["samples_seen"], state["tokens_seen"]
        if self.dm is not None:
            self.dm.load(path)
        metrics = self.out_dir / "metrics.jsonl" if self.out_dir is not None else None
        if metrics is not None and metrics.is_file() and self.accelerator.is_main_process:
            # Rows of iterations after the checkpoint (written before a kill) are redone.
            from tokenalign.utils.io import atomic_write_text

            keep = [line for line in metrics.read_text(encoding="utf-8").splitlines(keepends=True)
                    if line.strip() and json.loads(line).get("iteration", 0) <= self.iteration]
            atomic_write_text(metrics, "".join(keep))
        log.info("resumed from %s at iteration %d", path, self.iteration)

