"""Policy losses (guidance-weighted MLE, token REINFORCE, PPO, DPO): one function each, on
right-padded ``[B, T]`` tensors (DPO: on per-sequence log-probs ``[N]``).

``mask`` marks real response tokens. "mean" is over all real tokens of the batch
(``masked_mean``), as in the guidance paper's mean_{i,t} (Yang et al., NeurIPS 2023).
"""

from __future__ import annotations

import torch

from tokenalign.objectives.advantages import reward_to_go

__all__ = [
    "masked_mean",
    "guidance_weights",
    "rewards_with_endings",
    "weighted_mle_loss",
    "reinforce_loss",
    "ppo_policy_loss",
    "ppo_value_loss",
    "sequence_pg_loss",
    "sequence_logprobs",
    "dpo_loss",
]


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    m = mask.to(x.dtype)
    return (x * m).sum() / m.sum().clamp(min=1.0)


def guidance_weights(
    token_rewards: torch.Tensor, mask: torch.Tensor, use_exp: bool = False, use_reward_to_go: bool = False, eps: float = 1e-8
) -> torch.Tensor:
    """Guidance weights of the guidance paper's weighted MLE (Yang et al., NeurIPS 2023):
    w_t = r_t / Σ_t' r_t' per sequence over its response tokens.

    Options: exp(r) before normalising (positive weights whatever the reward's sign), and
    the reward-to-go Σ_{t'>=t} r_t' in place of r_t. Rewards should be positive (a bounded
    or sigmoid head) unless ``use_exp``; a sequence whose sum is ~0 gets weight 0.
    """
    r = token_rewards.float()
    if use_exp:
        r = torch.where(mask, r, torch.full_like(r, -torch.inf)).exp()
    r = r * mask
    if use_reward_to_go:
        r = reward_to_go(r, mask)
    total = r.sum(dim=1, keepdim=True)
    safe = torch.where(total.abs() > eps, total, torch.ones_like(total))
    return torch.where(total.abs() > eps, r / safe, torch.zeros_like(r)) * mask


def rewards_with_endings(token_rewards: torch.Tensor, mask: torch.Tensor, end_columns: torch.Tensor) -> torch.Tensor:
    """Token rewards where each row's ending token (its EOS, column ``end_columns[i]``; -1:
    the row has none) gets the mean reward of the row's other response tokens.

    A token reward model scores text, and the token that ends a reference response is not
    text: without a reward of its own its guidance weight would be 0 and weighted MLE would
    never teach the model to stop. The row's mean is the neutral choice: the ending weighs
    what an average token of that response weighs (w = 1/(L+1) under uniform weights)."""
    r = token_rewards.float().clone()
    rows = torch.nonzero(end_columns >= 0).flatten()
    if not len(rows):
        return r
    cols = end_columns[rows]
    text = mask.clone()
    text[rows, cols] = False
    mean = (r * text).sum(dim=1) / text.sum(dim=1).clamp(min=1)
    r[rows, cols] = mean[rows]
    return r


def weighted_mle_loss(logprobs: torch.Tensor, weights: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Guidance-weighted MLE (Yang et al., NeurIPS 2023): L = - mean over sequences of
    Σ_t w_t log π(y_t | s_t)."""
    per_seq = -(weights * logprobs * mask).sum(dim=1)
    return per_seq.mean()


def reinforce_loss(
    logprobs: torch.Tensor,
    returns: torch.Tensor,
    mask: torch.Tensor,
    neg_entropy: torch.Tensor | None = None,
    entropy_coef: float = 0.0,
) -> torch.Tensor:
    """The guidance paper's token REINFORCE with max-entropy (Yang et al., NeurIPS 2023):
    mean_{i,t}[ r_t (-log π(y_t|s_t)) ] + α mean_{i,t}[ Σ_a π log π ].

    ``returns`` is r_t (the paper's default: no baseline, no discount) or the reward-to-go.
    ``neg_entropy`` is Σ_a π(a|s_t) log π(a|s_t) (minimising it maximises entropy).
    """
    loss = masked_mean(returns.detach() * -logprobs, mask)
    if entropy_coef and neg_entropy is not None:
        loss = loss + entropy_coef * masked_mean(neg_entropy, mask)
    return loss


def ppo_policy_loss(
    logprobs: torch.Tensor, old_logprobs: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor, clip: float = 0.2
) -> tuple[torch.Tensor, dict[str, float]]:
    """Clipped surrogate: mean_t max(-A ρ, -A clip(ρ, 1-ε, 1+ε)), ρ = π / π_old."""
    ratio = torch.exp(logprobs - old_logprobs)
    unclipped = -advantages * ratio
    clipped = -advantages * ratio.clamp(1.0 - clip, 1.0 + clip)
    loss = masked_mean(torch.maximum(unclipped, clipped), mask)
    with torch.no_grad():
        stats = {
            "clip_fraction": masked_mean((clipped > unclipped).float(), mask).item(),
            "approx_kl_old": masked_mean(0.5 * (logprobs - old_logprobs) ** 2, mask).item(),
        }
    return loss, stats


def ppo_value_loss(
    values: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor, clip: float = 0.2
) -> torch.Tensor:
    """Clipped value loss: 0.5 mean_t max((V - R)^2, (V_old + clip(V - V_old, ±ε) - R)^2)."""
    clipped = old_values + (values - old_values).clamp(-clip, clip)
    return 0.5 * masked_mean(torch.maximum((values - returns) ** 2, (clipped - returns) ** 2), mask)


def sequence_pg_loss(logprobs: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """REINFORCE with one advantage per sequence (RLOO): - mean_i A_i Σ_t log π(y_t|s_t)."""
    return -(advantages.detach() * (logprobs * mask).sum(dim=1)).mean()


def sequence_logprobs(logprobs: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """log π(y|x) of each row: the sum of its response tokens' log-probs, ``[B, T]`` -> ``[B]``."""
    return (logprobs * mask).sum(dim=1)


def dpo_loss(
    policy_chosen: torch.Tensor,
    policy_rejected: torch.Tensor,
    ref_chosen: torch.Tensor,
    ref_rejected: torch.Tensor,
    beta: float = 0.1,
    label_smoothing: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """DPO (Rafailov et al., NeurIPS 2023) per pair, from sequence log-probs ``[N]``:

    h = β [(log π(y_w|x) - log π_ref(y_w|x)) - (log π(y_l|x) - log π_ref(y_l|x))],
    L = -(1 - ε) log σ(h) - ε log σ(-h).

    ε (``label_smoothing``) is conservative DPO (cDPO, Mitchell 2023): each label is taken
    as flipped with probability ε; ε = 0 is the paper's loss. Returns the losses and the
    implicit rewards β (log π - log π_ref) of the chosen and rejected responses (detached).
    """
    chosen = beta * (policy_chosen - ref_chosen)
    rejected = beta * (policy_rejected - ref_rejected)
    h = chosen - rejected
    losses = -(1.0 - label_smoothing) * torch.nn.functional.logsigmoid(h) - label_smoothing * torch.nn.functional.logsigmoid(-h)
    return losses, chosen.detach(), rejected.detach()
