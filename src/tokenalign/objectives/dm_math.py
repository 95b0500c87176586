"""Distribution matching (Korbak et al.: alignment as inference): EBM targets, DPG / GDC++
(Korbak et al., 2022), f-DPG (Go et al., 2023), CDPG (Korbak et al., 2022) and IS estimates.

Inputs are 1-D per-SEQUENCE tensors over N samples: log-probabilities summed over the
response tokens (``log_pi`` the trained policy π_θ, ``log_q`` the proposal that sampled the
batch, ``log_base`` π_0) and per-sample scores. P is the unnormalised target, Z = Σ_y P(y)
and p = P / Z. Ratios such as P/q overflow for long sequences, so they are formed from
differences of logs in float64 and exponentiated only after normalising; results come back
in the input dtype, detached. P = 0 (a violated constraint) is log P = -inf; it is masked
wherever 0 · (-inf) would otherwise appear.
"""

from __future__ import annotations

import math

import torch

__all__ = [
    "log_target",
    "fit_lambdas",
    "ZEstimator",
    "dpg_advantages",
    "dm_policy_loss",
    "DIVERGENCES",
    "fdpg_pseudo_rewards",
    "fdpg_advantages",
    "cdpg_log_z",
    "cdpg_advantages",
    "dm_estimates",
    "should_swap_proposal",
]

DIVERGENCES = ("kl", "rkl", "js", "tv")
F64 = torch.float64


def _f64(x: torch.Tensor | float) -> torch.Tensor:
    return x.detach().to(F64) if isinstance(x, torch.Tensor) else torch.tensor(float(x), dtype=F64)


def _check_nan(name: str, x: torch.Tensor) -> None:
    if torch.isnan(x).any():
        raise ValueError(f"{name} contains NaN")


def _log_indicator(constraint: torch.Tensor) -> torch.Tensor:
    """log b for a 0/1 or bool tensor: 0 where satisfied, -inf where violated."""
    b = constraint.detach().to(F64)
    if not ((b == 0) | (b == 1)).all():
        raise ValueError("constraint must be boolean or 0/1")
    return torch.log(b)


def _logaddexp(a: float, b: float) -> float:
    hi = max(a, b)
    return hi if hi == -math.inf else hi + math.log1p(math.exp(-abs(a - b)))


def log_target(
    log_base: torch.Tensor,
    *,
    constraint: torch.Tensor | None = None,
    reward: torch.Tensor | None = None,
    beta: float | None = None,
    features: torch.Tensor | None = None,
    lambdas: torch.Tensor | None = None,
) -> torch.Tensor:
    """Unnormalised EBM log P(y) = log π_0(y) + log b(y) + r(y)/β + λ·φ(y) (Korbak et al., 2022).

    Any subset of the factors: b the binary constraint (violations give -inf), r/β the
    RLHF posterior p* ∝ π_0 exp(r/β), and ``features`` [N, F] with ``lambdas`` [F].
    """
    _check_nan("log_base", log_base)
    out = _f64(log_base)
    if constraint is not None:
        _check_nan("constraint", constraint)
        out = out + _log_indicator(constraint)
    if reward is not None:
        _check_nan("reward", reward)
        if beta is None or not beta > 0:
            raise ValueError(f"beta must be > 0 when a reward is given, got {beta}")
        out = out + _f64(reward) / beta
    if (features is None) != (lambdas is None):
        raise ValueError("features and lambdas must be given together")
    if features is not None and lambdas is not None:
        _check_nan("features", features)
        _check_nan("lambdas", lambdas)
        out = out + _f64(features) @ _f64(lambdas)
    return out.to(log_base.dtype)


def fit_lambdas(
    features: torch.Tensor, moments: torch.Tensor, lr: float = 0.5, tol: float = 0.01, max_iter: int = 1000
) -> tuple[torch.Tensor, dict]:
    """GDC moment matching (Khalifa et al., 2021): λ such that P = π_0 exp(λ·φ) has E_p[φ] = μ,
    from samples of π_0.

    λ <- λ + lr (μ - μ̂(λ)) with the self-normalised IS estimate μ̂(λ) = Σ_i softmax_i(λ·φ_i) φ_i;
    this is gradient ascent on the concave dual λ·μ - log Σ_i exp(λ·φ_i). Stops once
    max|μ - μ̂| < tol (``iterations`` counts the updates made).
    """
    phi, mu = _f64(features), _f64(moments)
    if phi.dim() != 2 or mu.shape != phi.shape[1:]:
        raise ValueError(f"features {tuple(phi.shape)} must be [N, F] and moments [F], got {tuple(mu.shape)}")
    lam = torch.zeros_like(mu)
    converged, it = False, 0
    for it in range(max_iter + 1):
        mu_hat = torch.softmax(phi @ lam, dim=0) @ phi
        err = mu - mu_hat
        if bool((err.abs() < tol).all()):
            converged = True
            break
        if it < max_iter:
            lam = lam + lr * err
    dtype = features.dtype if features.is_floating_point() else torch.get_default_dtype()
    return lam.to(dtype), {"iterations": it, "converged": converged, "moments_hat": mu_hat.to(dtype)}


class ZEstimator:
    """Running estimate of Z = E_q[P/q] from batches of log weights log P - log q (GDC++, Korbak
et al., 2022).

    Default: the exact cumulative mean over every sample seen (log Σ w - log n, kept in log
    space so P/q never overflows). With ``momentum`` m in (0, 1): Z <- m Z + (1 - m) mean(batch),
    the first batch setting Z. ``state_dict`` holds float64 scalars, so a resumed run
    continues bit-for-bit.
    """

    def __init__(self, momentum: float | None = None):
        if momentum is not None and not 0.0 < momentum < 1.0:
            raise ValueError(f"momentum must be in (0, 1), got {momentum}")
        self.momentum = momentum
        self.log_sum, self.count, self.log_z = -math.inf, 0, -math.inf

    def update(self, log_weights: torch.Tensor) -> float:
        """Add a batch of log P - log q and return the current Z."""
        lw = _f64(log_weights).flatten()
        _check_nan("log_weights", lw)
        if lw.numel():
            batch_log_sum = torch.logsumexp(lw, 0).item()
            batch_log_mean = batch_log_sum - math.log(lw.numel())
            first = self.count == 0
            self.log_sum = _logaddexp(self.log_sum, batch_log_sum)
            self.count += lw.numel()
            if self.momentum is None:
                self.log_z = self.log_sum - math.log(self.count)
            elif first:
                self.log_z = batch_log_mean
            else:
                m = self.momentum
                self.log_z = _logaddexp(math.log(m) + self.log_z, math.log1p(-m) + batch_log_mean)
        return self.value

    @property
    def log_value(self) -> float:
        if self.count == 0:
            raise RuntimeError("ZEstimator has seen no samples")
        return self.log_z

    @property
    def value(self) -> float:
        return _f64(self.log_value).exp().item()  # inf rather than OverflowError

    def state_dict(self) -> dict:
        return {"log_sum": self.log_sum, "count": self.count, "log_z": self.log_z, "momentum": self.momentum}

    def load_state_dict(self, state: dict) -> None:
        self.log_sum, self.count = float(state["log_sum"]), int(state["count"])
        self.log_z, self.momentum = float(state["log_z"]), state["momentum"]


def dpg_advantages(
    log_target: torch.Tensor, log_q: torch.Tensor, log_pi: torch.Tensor, z: float | torch.Tensor, baseline: bool = True
) -> torch.Tensor:
    """GDC++ signal A = P/q - Z π/q (Korbak et al., 2022); ``baseline=False`` gives plain DPG, P/q.

    Over samples of q, -mean(A log π) has expected gradient Z ∇KL(p || π_θ); the baseline
    term has zero expectation (E_π[∇ log π] = 0) and only cuts variance. Dividing by Z gives
    the scale-free p/q - π/q, which is ``fdpg_advantages`` with "kl" and weights π/q.
    """
    lq = _f64(log_q)
    adv = torch.exp(_f64(log_target) - lq)
    if baseline:
        adv = adv - torch.exp(torch.log(_f64(z)) + _f64(log_pi) - lq)
    return adv.to(log_pi.dtype)


def dm_policy_loss(log_pi: torch.Tensor, advantages: torch.Tensor) -> torch.Tensor:
    """-mean(A log π_θ(y)) over sequences; A is treated as a constant."""
    return -(advantages.detach() * log_pi).mean()


def fdpg_pseudo_rewards(
    log_pi: torch.Tensor,
    log_target: torch.Tensor,
    log_z: float | torch.Tensor,
    divergence: str,
    min_pseudo_reward: float = -100.0,
) -> torch.Tensor:
    """f-DPG pseudo-reward -f'(t), t = π/p (Go et al. 2023), so that E_π[-f'(t) ∇log π] = -∇D_f.

    D_f(π||p) = E_p[f(π/p)]; log t = log π - log P + log Z (``log_z`` scalar or per-sample).
    - "kl"  forward KL(p||π), f = -log t:            p/π (DPG);          p = 0 -> 0.
    - "rkl" reverse KL(π||p), f = t log t:           -log t - 1 = r/β - log(π/π_0) - log Z - 1
      (RLHF); p = 0 -> -inf, so the result is clamped below at ``min_pseudo_reward``.
    - "js"  Jensen-Shannon ½KL(π||m) + ½KL(p||m), m = (π+p)/2, i.e. f = ½[t log t - (1+t) log((1+t)/2)]
      with the ½ (bounded by log 2): ½ log((1+t)/(2t));  p = 0 -> -½ log 2.
    - "tv"  total variation ½Σ|π-p|, f = |t-1|/2:   -sign(t-1)/2;        p = 0 -> -½.
    """
    log_t = _f64(log_pi) - _f64(log_target) + _f64(log_z)
    if divergence == "kl":
        out = torch.exp(-log_t)
    elif divergence == "rkl":
        out = (-log_t - 1.0).clamp(min=min_pseudo_reward)
    elif divergence == "js":  # log(1 + 1/t) = logaddexp(0, -log t), exact and 0 at t = inf
        out = 0.5 * (torch.logaddexp(torch.zeros_like(log_t), -log_t) - math.log(2.0))
    elif divergence == "tv":
        out = -0.5 * torch.sign(log_t)
    else:
        raise ValueError(f"unknown divergence {divergence!r}; expected one of {DIVERGENCES}")
    return out.to(log_pi.dtype)


def fdpg_advantages(
    pseudo_rewards: torch.Tensor,
    log_importance_weights: torch.Tensor | None = None,
    baseline: bool = True,
    self_normalise: bool = True,
) -> torch.Tensor:
    """A_i = w_i (R_i - b) for ``dm_policy_loss``, estimating E_π[(R - b) ∇log π].

    Samples from π: w = 1. From a proposal q: ``log_importance_weights`` = log π - log q
    (given as logs: per-sequence ratios overflow), normalised to mean 1 when
    ``self_normalise`` (consistent, lower variance), else used raw (unbiased). The baseline
    b = Σ w R / Σ w is the weighted batch mean, the IS estimate of E_π[R].
    """
    r = _f64(pseudo_rewards)
    if log_importance_weights is None:
        w = torch.ones_like(r)
    else:
        lw = _f64(log_importance_weights)
        w = torch.exp(lw - torch.logsumexp(lw, 0)) * lw.numel() if self_normalise else torch.exp(lw)
    if baseline:
        r = r - (w * r).sum() / w.sum()
    return (w * r).to(pseudo_rewards.dtype)


def _cdpg_log_ratios(
    log_base: torch.Tensor, log_pi: torch.Tensor, constraint: torch.Tensor, group_size: int, eps: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """[C, M] log((b + eps) π_0/π) and [C, 1] log Z_c = log mean_j of those ratios."""
    if group_size < 1 or log_pi.numel() % group_size:
        raise ValueError(f"{log_pi.numel()} samples do not split into groups of {group_size}")
    b = constraint.detach().to(F64)
    log_ratio = (torch.log(b + eps) + _f64(log_base) - _f64(log_pi)).view(-1, group_size)
    return log_ratio, torch.logsumexp(log_ratio, 1, keepdim=True) - math.log(group_size)


def cdpg_log_z(
    log_base: torch.Tensor, log_pi: torch.Tensor, constraint: torch.Tensor, group_size: int, eps: float = 1e-4
) -> torch.Tensor:
    """CDPG (Korbak et al., 2022): [C] log Z_c, Z_c = mean_j (b_j + eps) π_0(y_j|c)/π(y_j|c) over the
    ``group_size`` contiguous samples of context c (drawn from π)."""
    return _cdpg_log_ratios(log_base, log_pi, constraint, group_size, eps)[1].view(-1).to(log_pi.dtype)


def cdpg_advantages(
    log_base: torch.Tensor,
    log_pi: torch.Tensor,
    constraint: torch.Tensor,
    group_size: int,
    eps: float = 1e-4,
    baseline: bool = True,
) -> torch.Tensor:
    """CDPG (Korbak et al., 2022): [N] w = p_c/π = (b + eps) π_0 / (Z_c π), minus 1 with the baseline.

    Each context has its own target p_c = P_c / Z_c with P_c = (b + eps) π_0(·|c). A single
    global Z is wrong: Z_c differs by orders of magnitude across contexts, and
    P_c / Z would weight each context's gradient by Z_c / Z instead of matching every p_c.
    With the estimated Z_c the group mean of w is exactly 1, so "- 1" is the group-mean
    baseline; the expected gradient of ``dm_policy_loss`` is (1/C) Σ_c ∇KL(p_c || π(·|c)).
    """
    log_ratio, log_z = _cdpg_log_ratios(log_base, log_pi, constraint, group_size, eps)
    w = torch.exp(log_ratio - log_z)
    return (w - 1.0 if baseline else w).view(-1).to(log_pi.dtype)


def dm_estimates(
    log_target: torch.Tensor,
    log_q: torch.Tensor,
    log_pi: torch.Tensor,
    constraint: torch.Tensor | None = None,
    log_z: float | torch.Tensor | None = None,
) -> dict[str, float]:
    """Importance-sampling diagnostics from samples of q (as in GDC++, Korbak et al., 2022).

    log_z: log mean P/q, or the given running estimate; kl_p_pi = -log Z + E_q[P/(Zq) (log P -
    log π)], kl_p_q likewise with log q; tv_p_pi = ½ E_q|P/(Zq) - π/q|; constraint_satisfaction:
    the π-rate of b, self-normalised Σ_i softmax_i(log π - log q) b_i (the plain mean when q = π).
    Samples with P = 0 contribute 0 to the P-weighted sums.
    """
    lt, lq, lp = _f64(log_target), _f64(log_q), _f64(log_pi)
    log_w = lt - lq
    lz = torch.logsumexp(log_w, 0) - math.log(log_w.numel()) if log_z is None else _f64(log_z)
    alive = torch.isfinite(lt)
    rel = torch.where(alive, torch.exp(log_w - lz), 0.0)  # P / (Z q)

    def kl_to(other: torch.Tensor) -> float:
        return (torch.where(alive, rel * (lt - other), 0.0).mean() - lz).item()

    out = {
        "log_z": lz.item(),
        "kl_p_pi": kl_to(lp),
        "kl_p_q": kl_to(lq),
        "tv_p_pi": 0.5 * (rel - torch.exp(lp - lq)).abs().mean().item(),
    }
    if constraint is not None:
        out["constraint_satisfaction"] = (torch.softmax(lp - lq, 0) * constraint.detach().to(F64)).sum().item()
    return out


def should_swap_proposal(kl_p_pi: float, kl_p_q: float) -> bool:
    """Offline DPG: set q <- π_θ when the estimated KL(p||π_θ) < KL(p||q) (False on NaN)."""
    return bool(kl_p_pi < kl_p_q)
