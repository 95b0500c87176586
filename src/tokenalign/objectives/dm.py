"""Distribution matching (Korbak et al.: alignment as inference): DPG / GDC++, f-DPG and CDPG.

The target is an energy-based model P(y) = π0(y) b(y) exp(r/β or λ·b): π0 the initial
policy, b the task's constraint. The objective keeps what a run needs between iterations:
the running estimate of the partition function Z, the fitted λ of a moment target, and,
for offline DPG, the proposal q that samples the rollouts (replaced by the policy when the
policy is estimated closer to the target). :meth:`DistributionMatching.signal` turns one
rollout into per-sequence importance-weighted signals for the shared sequence
policy-gradient loss; the importance-sampling estimates of each step (KL(p||π), KL(p||q),
TV, Z, constraint satisfaction) land in the metrics.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
from pathlib import Path
from typing import Any, Literal

import torch

from tokenalign.errors import ConfigError
from tokenalign.objectives.base import Chunk, Objective, register_objective
from tokenalign.objectives.dm_math import (
    ZEstimator,
    cdpg_advantages,
    dm_estimates,
    dpg_advantages,
    fdpg_advantages,
    fdpg_pseudo_rewards,
    fit_lambdas,
    log_target,
    should_swap_proposal,
)
from tokenalign.objectives.losses import sequence_pg_loss
from tokenalign.rollout.batch import Rollout, TokenBatch, token_logprobs
from tokenalign.utils.torch_files import load_weights_only

log = logging.getLogger(__name__)

__all__ = ["DMSettings", "DistributionMatching", "DPG", "FDPG", "CDPG"]


@dataclasses.dataclass
class DMSettings:
    """Distribution matching's settings (config section ``dm``): the target EBM
    P(y) = π0(y) b(y) exp(r/β or λ·b).

    ``target``: ``constraint`` (b = 1 iff the task's score is 0, for pep8 "no violation"),
    ``reward`` (π0 exp(r/β): the posterior that KL-regularised RL matches in reverse KL) or
    ``moments`` (π0 exp(λ·b) with λ fitted so that E_p[b] = ``moments[0]``, by
    self-normalised importance sampling on ``lambda_samples`` samples of π0).
    """

    target: Literal["constraint", "reward", "moments"] = "constraint"
    beta: float = 0.1  # target reward: temperature of exp(r/β)
    moments: list[float] = dataclasses.field(default_factory=lambda: [0.5])  # target moments: the desired E_p[b]
    lambda_samples: int = 256  # target moments: samples of π0 that λ is fitted on
    divergence: Literal["kl", "rkl", "js", "tv"] = "js"  # fdpg's f-divergence (the f-DPG paper: JS a good default)
    baseline: bool = True  # the GDC++ / f-DPG / CDPG baselines
    offline: bool = False  # dpg: sample from a frozen proposal q, replaced by π when KL(p||π) < KL(p||q)
    check_every: int = 10  # offline: iterations between proposal checks
    z_momentum: float = 0.0  # dpg Z estimate: 0 = cumulative mean over all samples, else an EMA
    cdpg_eps: float = 1e-4  # CDPG: Z_c = mean (b + eps) π0/π

    def validate(self) -> None:
        if self.target == "reward" and not self.beta > 0:
            raise ConfigError(f"dm.beta must be > 0, got {self.beta}")
        if self.target == "moments" and len(self.moments) != 1:
            raise ConfigError("dm.moments: one desired moment (of the constraint feature)")


class DistributionMatching(Objective):
    """The shared part of dpg, fdpg and cdpg (their signal differs; see :meth:`signal`)."""

    section = "dm"
    Settings = DMSettings
    needs_global_z = True  # the signal uses the running estimate of Z (no signal before it is finite)
    samples_offline = False  # can sample from a frozen proposal q (dm.offline)

    @classmethod
    def check_config(cls, cfg) -> None:
        s = cfg.sampling
        if s.temperature != 1.0 or s.top_k or s.top_p != 1.0:
            raise ConfigError(f"objective {cls.name} matches distributions: sample at temperature 1 without top-k/top-p")
        if cfg.objective_settings.offline and not cls.samples_offline:
            raise ConfigError("dm.offline applies to objective dpg")

    @classmethod
    def check_sources(cls, cfg) -> None:
        if cfg.reward.source != "scorer":
            raise ConfigError(f"objective {cls.name}: the constraint b(y) is the task scorer's (score 0 = no violation): "
                              "reward.source must be scorer")

    def __init__(self, cfg, settings) -> None:
        super().__init__(cfg, settings)
        self.accelerator = None
        self.z = ZEstimator(momentum=settings.z_momentum or None)
        self.lambdas: torch.Tensor | None = None
        self.proposal = None
        self.last_stats: dict[str, float] = {}
        self.swaps = 0

    def setup(self, trainer) -> None:
        self.accelerator = trainer.accelerator
        if self.settings.offline:
            self.proposal = copy.deepcopy(trainer.unwrapped_policy).eval().requires_grad_(False)

    def on_fit_start(self, trainer) -> None:
        if self.needs_lambda:
            self.fit_lambda(trainer)

    # ---- sampling (offline DPG samples from its proposal q) ---------------------------
    def sample_rollout(self, trainer, prompts, seed: int) -> Rollout:
        if self.proposal is None:
            return super().sample_rollout(trainer, prompts, seed)
        inputs = [p for p in prompts for _ in range(self.cfg.samples_per_prompt)]
        return trainer.make_rollout(trainer.sample(inputs, seed, model=self.proposal), sampled_by="proposal")

    def rollout_extras(self, trainer, batch: TokenBatch, recorded: torch.Tensor | None, sampled_by: str | None) -> dict:
        if self.proposal is None:
            return {}
        if sampled_by == "proposal" and recorded is not None:
            return {"proposal_logprobs": recorded}
        return {"proposal_logprobs": trainer.chunked(lambda b: token_logprobs(self.proposal, b)["logprobs"], batch)}

    def loss(self, chunk: Chunk, ro: Rollout, signal: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        pg = sequence_pg_loss(chunk.logprobs, chunk.cut(signal["advantages"]), chunk.mask)
        return chunk.row_share * pg + chunk.token_share * self.entropy_term(chunk), {}

    def extra_stats(self) -> dict[str, float]:
        return dict(self.last_stats)

    @property
    def needs_lambda(self) -> bool:
        return self.settings.target == "moments" and self.lambdas is None

    # ---- the target ------------------------------------------------------------------
    @staticmethod
    def constraint(scores: torch.Tensor) -> torch.Tensor:
        """b(y) = 1 iff the task's score is 0 (pep8: no violation, and it compiles)."""
        return scores >= 0

    def log_target(self, log_base: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        dm = self.settings
        b = self.constraint(scores)
        if dm.target == "constraint":
            return log_target(log_base, constraint=b)
        if dm.target == "reward":
            return log_target(log_base, reward=scores, beta=dm.beta)
        return log_target(log_base, features=b.double().unsqueeze(1), lambdas=self.lambdas)

    def fit_lambda(self, trainer) -> None:
        """λ of the moment target, from samples of π0 (the initial policy) on training prompts."""
        dm = self.settings
        prompts = trainer.train_prompts
        inputs = [prompts[i % len(prompts)] for i in range(dm.lambda_samples)]
        samples = trainer.sample(inputs, seed=self.cfg.seed * 31 + 17, model=trainer.ref_policy or trainer.unwrapped_policy)
        scores = torch.tensor(trainer.reward_source(samples).scores, dtype=torch.float64)
        features = self.constraint(scores).double().unsqueeze(1)
        self.lambdas, info = fit_lambdas(features, torch.tensor(dm.moments, dtype=torch.float64))
        log.info("moment target: λ = %s after %d iterations (converged %s; base moment %.3f)",
                 self.lambdas.tolist(), info["iterations"], info["converged"], float(features.mean()))

    # ---- one step -------------------------------------------------------------------
    def _all(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` of every process (Z and the estimates are the same on every rank)."""
        acc = self.accelerator
        if acc is None or acc.num_processes == 1:
            return x
        return acc.gather(x.contiguous())

    def signal(self, ro: Rollout, iteration: int) -> dict[str, torch.Tensor]:
        """Per-sequence signal of ``ro`` for the sequence policy-gradient loss.

        Z and the logged estimates use the samples of every process; CDPG's Z_c needs only
        the process's own rows (a prompt's K samples never straddle processes)."""
        mask = ro.batch.response_mask
        log_pi = (ro.logprobs * mask).sum(dim=1).double()
        log_q = (ro.extra["proposal_logprobs"] * mask).sum(dim=1).double() if "proposal_logprobs" in ro.extra else log_pi
        log_base = (ro.ref_logprobs * mask).sum(dim=1).double()
        b = self.constraint(ro.scores)
        log_p = self.log_target(log_base, ro.scores.double())
        all_p, all_q, all_pi, all_b = (self._all(t) for t in (log_p, log_q, log_pi, b))
        self.z.update(all_p - all_q)
        log_z = torch.tensor(self.z.log_value, dtype=torch.float64)
        est = dm_estimates(all_p, all_q, all_pi, constraint=all_b, log_z=log_z)
        self.last_stats = {f"dm_{k}": float(v) for k, v in est.items()}
        self.last_stats["dm_z"] = float(self.z.value)
        if self.needs_global_z and not torch.isfinite(log_z):
            # No sample has had target mass yet (no constraint satisfied): no signal this step.
            return {"advantages": torch.zeros_like(ro.scores)}
        adv = self.sequence_advantages(log_p, log_q, log_pi, log_base, b, log_z)
        if not torch.isfinite(adv).all():
            raise FloatingPointError(f"{self.name}: non-finite advantages at iteration {iteration} ({self.last_stats})")
        return {"advantages": adv.float().to(ro.scores.device)}

    def sequence_advantages(self, log_p, log_q, log_pi, log_base, b, log_z) -> torch.Tensor:
        """Each sample's signal from its log target, proposal, policy and base probabilities
        (sums over its tokens), its constraint value b and the estimate log Z."""
        raise NotImplementedError

    def after_update(self, trainer) -> None:
        """Offline DPG: every ``check_every`` iterations, q <- π when KL(p||π) < KL(p||q)."""
        dm = self.settings
        if self.proposal is None or trainer.iteration % max(dm.check_every, 1):
            return
        kl_pi, kl_q = self.last_stats.get("dm_kl_p_pi"), self.last_stats.get("dm_kl_p_q")
        if kl_pi is not None and kl_q is not None and should_swap_proposal(kl_pi, kl_q):
            self.proposal.load_state_dict(trainer.unwrapped_policy.state_dict())
            self.swaps += 1
            log.info("iteration %d: proposal <- policy (KL(p||π) %.3f < KL(p||q) %.3f)", trainer.iteration, kl_pi, kl_q)
        self.last_stats["dm_proposal_swaps"] = float(self.swaps)

    # ---- checkpoints ----------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        state = {"z": self.z.state_dict(), "lambdas": self.lambdas, "swaps": self.swaps}
        if self.proposal is not None:
            state["proposal"] = {k: v.detach().cpu() for k, v in self.proposal.state_dict().items()}
        return state

    def save(self, folder: Path) -> None:
        torch.save(self.state_dict(), Path(folder) / "dm_state.pt")

    def load(self, folder: Path) -> None:
        path = Path(folder) / "dm_state.pt"
        if not path.is_file():
            return
        state = load_weights_only(path)
        self.z.load_state_dict(state["z"])
        self.lambdas = state["lambdas"]
        self.swaps = state["swaps"]
        if self.proposal is not None and "proposal" in state:
            self.proposal.load_state_dict(state["proposal"])


@register_objective("dpg")
class DPG(DistributionMatching):
    """GDC++: importance-weighted policy gradient toward the target, P/q - Z π/q."""

    name = "dpg"
    samples_offline = True

    def sequence_advantages(self, log_p, log_q, log_pi, log_base, b, log_z) -> torch.Tensor:
        return dpg_advantages(log_p, log_q, log_pi, self.z.value, baseline=self.settings.baseline)


@register_objective("fdpg")
class FDPG(DistributionMatching):
    """f-DPG: the pseudo-reward -f'(π/p) of the chosen f-divergence, minus its batch mean."""

    name = "fdpg"

    def sequence_advantages(self, log_p, log_q, log_pi, log_base, b, log_z) -> torch.Tensor:
        s = self.settings
        return fdpg_advantages(fdpg_pseudo_rewards(log_pi, log_p, log_z, s.divergence), baseline=s.baseline)


@register_objective("cdpg")
class CDPG(DistributionMatching):
    """Conditional DPG: a per-prompt partition function Z_c over the K samples of a prompt."""

    name = "cdpg"
    needs_global_z = False  # Z_c per prompt, from the K samples of the prompt

    def sequence_advantages(self, log_p, log_q, log_pi, log_base, b, log_z) -> torch.Tensor:
        """Rows are grouped by prompt, ``samples_per_prompt`` each."""
        s = self.settings
        return cdpg_advantages(log_base, log_pi, b, self.cfg.samples_per_prompt, s.cdpg_eps, baseline=s.baseline)

    @classmethod
    def check_config(cls, cfg) -> None:
        super().check_config(cfg)
        if cfg.samples_per_prompt < 2:
            raise ConfigError("objective cdpg estimates Z_c per prompt: samples_per_prompt >= 2")
        if cfg.objective_settings.target != "constraint":
            raise ConfigError("objective cdpg matches π0(y|c) b(y, c): dm.target must be constraint")
