"""Output bounding of the token-reward head (SPEC 1.1).

``bounded``: r = 1e-8 + softplus(1 - softplus(1 - z) - 1e-8), range (0, ~1.313) with
r(0) ~= 0.549 — the PG paper's default; ``sigmoid``; ``identity``. NaN is an error, never
silently zeroed.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F

Bounding = Literal["bounded", "sigmoid", "identity"]

__all__ = ["Bounding", "bound_rewards"]


def bound_rewards(z: torch.Tensor, how: Bounding = "bounded") -> torch.Tensor:
    """Map raw head outputs ``z`` to rewards; raises on NaN."""
    if torch.isnan(z).any():
        raise FloatingPointError("token reward head produced NaN")
    if how == "bounded":
        return 1e-8 + F.softplus(1.0 - F.softplus(1.0 - z) - 1e-8)
    if how == "sigmoid":
        return torch.sigmoid(z)
    if how == "identity":
        return z
    raise ValueError(f"unknown bounding {how!r}; choose bounded, sigmoid or identity")
