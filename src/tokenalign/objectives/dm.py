"""What a distribution-matching run keeps between iterations (SPEC 3.1-3.3).

The target EBM P(y) = π0(y) b(y) exp(r/β or λ·b), the running estimate of its partition
function Z, the fitted λ of a moment target, and, for offline DPG, the proposal q that
samples the rollouts (replaced by the policy when the policy is estimated closer to the
target). :meth:`DMState.advantages` turns one rollout into per-sequence signals for the
shared sequence policy-gradient loss; the importance-sampling estimates of each step
(KL(p||π), KL(p||q), TV, Z, constraint satisfaction) land in the metrics.
"""

from __future__ import annotations

import copy
import logging
from pathlib import Path
from typing import Any

import torch

from tokenalign.policy.config import TrainConfig
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

log = logging.getLogger(__name__)

__all__ = ["DMState"]


class DMState:
    def __init__(self, cfg: TrainConfig, policy, accelerator=None) -> None:
        self.cfg = cfg
        self.accelerator = accelerator
        self.z = ZEstimator(momentum=cfg.dm.z_momentum or None)
        self.lambdas: torch.Tensor | None = None
        self.proposal = None
        if cfg.dm.offline:
            self.proposal = copy.deepcopy(policy).eval().requires_grad_(False)
        self.last_stats: dict[str, float] = {}
        self.swaps = 0

    @property
    def needs_lambda(self) -> bool:
        return self.cfg.dm.target == "moments" and self.lambdas is None

    # ---- the target ------------------------------------------------------------------
    @staticmethod
    def constraint(scores: torch.Tensor) -> torch.Tensor:
        """b(y) = 1 iff the task's score is 0 (pep8: no violation, and it compiles)."""
        return scores >= 0

    def log_target(self, log_base: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        dm = self.cfg.dm
        b = self.constraint(scores)
        if dm.target == "constraint":
            return log_target(log_base, constraint=b)
        if dm.target == "reward":
            return log_target(log_base, reward=scores, beta=dm.beta)
        return log_target(log_base, features=b.double().unsqueeze(1), lambdas=self.lambdas)

    def fit_lambda(self, trainer) -> None:
        """λ of the moment target, from samples of π0 (the initial policy) on training prompts."""
        dm = self.cfg.dm
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

    def advantages(self, ro, iteration: int) -> torch.Tensor:
        """Per-sequence signal of ``ro`` for the sequence policy-gradient loss.

        Z and the logged estimates use the samples of every process; CDPG's Z_c needs only
        the process's own rows (a prompt's K samples never straddle processes)."""
        cfg, dm = self.cfg, self.cfg.dm
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
        if cfg.objective != "cdpg" and not torch.isfinite(log_z):
            # No sample has had target mass yet (no constraint satisfied): no signal this step.
            return torch.zeros_like(ro.scores)
        if cfg.objective == "dpg":
            adv = dpg_advantages(log_p, log_q, log_pi, self.z.value, baseline=dm.baseline)
        elif cfg.objective == "fdpg":
            adv = fdpg_advantages(fdpg_pseudo_rewards(log_pi, log_p, log_z, dm.divergence), baseline=dm.baseline)
        else:  # cdpg: rows are grouped by prompt, samples_per_prompt each
            adv = cdpg_advantages(log_base, log_pi, b, cfg.samples_per_prompt, dm.cdpg_eps, baseline=dm.baseline)
        if not torch.isfinite(adv).all():
            raise FloatingPointError(f"{cfg.objective}: non-finite advantages at iteration {iteration} ({self.last_stats})")
        return adv.float().to(ro.scores.device)

    def after_update(self, trainer) -> None:
        """Offline DPG: every ``check_every`` iterations, q <- π when KL(p||π) < KL(p||q)."""
        dm = self.cfg.dm
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
        state = torch.load(path, weights_only=True, map_location="cpu")
        self.z.load_state_dict(state["z"])
        self.lambdas = state["lambdas"]
        self.swaps = state["swaps"]
        if self.proposal is not None and "proposal" in state:
            self.proposal.load_state_dict(state["proposal"])
