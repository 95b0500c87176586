"""Advantage estimators over per-token rewards: GAE, reward-to-go, RLOO, and whitening.

All take right-padded ``[B, T]`` tensors with a boolean ``mask`` of real response tokens
and never loop over tokens in Python: a discounted sum over future tokens is one matrix
product with the upper-triangular matrix ``D[t, t'] = c^(t' - t)`` for ``t' >= t``.
"""

from __future__ import annotations

import torch

__all__ = ["discounted_cumsum", "reward_to_go", "gae", "whiten", "rloo_baseline", "kl_penalty"]


def discounted_cumsum(x: torch.Tensor, discount: float) -> torch.Tensor:
    """``y_t = Σ_{t' >= t} discount^(t' - t) x_t'`` along the last dim."""
    t = x.shape[-1]
    idx = torch.arange(t, device=x.device)
    power = (idx.unsqueeze(0) - idx.unsqueeze(1)).to(torch.float64)  # [t, t'] = t' - t
    weights = torch.where(power >= 0, torch.tensor(discount, dtype=torch.float64, device=x.device) ** power.clamp(min=0), 0.0)
    return (x.to(torch.float64) @ weights.T).to(x.dtype)


def reward_to_go(rewards: torch.Tensor, mask: torch.Tensor, gamma: float = 1.0) -> torch.Tensor:
    """Σ_{t' >= t} γ^(t'-t) r_t' over real tokens (0 at padding)."""
    r = rewards * mask
    return discounted_cumsum(r, gamma) * mask


def gae(
    rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float = 1.0, lam: float = 0.95
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation (Schulman et al. 2016) on right-padded responses.

    δ_t = r_t + γ V_{t+1} - V_t with V past the last real token = 0 (the episode ends);
    A_t = Σ_{t' >= t} (γλ)^(t'-t) δ_t'; returns R_t = A_t + V_t. Both are 0 at padding.
    """
    m = mask.to(rewards.dtype)
    v = values * m
    next_v = torch.cat([v[:, 1:], torch.zeros_like(v[:, :1])], dim=1) * torch.cat([m[:, 1:], torch.zeros_like(m[:, :1])], dim=1)
    delta = (rewards * m + gamma * next_v - v) * m
    adv = discounted_cumsum(delta, gamma * lam) * m
    return adv, (adv + v) * m


def whiten(x: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True, eps: float = 1e-8) -> torch.Tensor:
    """(x - mean) / std over the masked entries (mean kept when ``shift_mean`` is False)."""
    m = mask.to(x.dtype)
    n = m.sum().clamp(min=1.0)
    mean = (x * m).sum() / n
    var = (((x - mean) * m) ** 2).sum() / (n - 1).clamp(min=1.0)
    out = (x - mean) * torch.rsqrt(var + eps)
    if not shift_mean:
        out = out + mean
    return out * m


def rloo_baseline(scores: torch.Tensor, group_size: int) -> torch.Tensor:
    """Leave-one-out advantages: each score minus the mean of the other samples of its
    prompt (Ahmadian et al. 2024). ``scores`` is ``[n_prompts * group_size]``, grouped."""
    if group_size < 2:
        raise ValueError("RLOO needs at least 2 samples per prompt")
    if scores.numel() % group_size:
        raise ValueError(f"{scores.numel()} scores do not split into groups of {group_size}")
    g = scores.view(-1, group_size)
    others = (g.sum(dim=1, keepdim=True) - g) / (group_size - 1)
    return (g - others).view(-1)


def kl_penalty(logprobs: torch.Tensor, ref_logprobs: torch.Tensor, mask: torch.Tensor, kind: str = "k1") -> torch.Tensor:
    """Per-token KL estimate between the sampling policy and the reference on sampled tokens.

    ``k1``: log π - log π_0 (unbiased, what the PPO reward subtracts); ``k3``:
    (ρ - 1) - log ρ with ρ = π_0 / π (non-negative, lower variance).
    """
    diff = (logprobs - ref_logprobs) * mask
    if kind == "k1":
        return diff
    if kind == "k3":
        log_ratio = -diff
        return (torch.expm1(log_ratio) - log_ratio) * mask
    raise ValueError(f"unknown KL estimator {kind!r}")
