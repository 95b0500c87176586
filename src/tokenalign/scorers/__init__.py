"""Sequence-level preference sources (scorers) and their gold token blame.

``SCORERS`` names the built-in scorers; :func:`make_scorer` turns a config value (a
registered name or ``package.module:attribute``) into a scorer.
"""

from tokenalign.scorers.base import (
    SCORERS,
    Blame,
    CallableScorer,
    RewardFunctionScorer,
    ScoreResult,
    Scorer,
    failure_kind,
    make_scorer,
    register_scorer,
    summarize_scores,
)

__all__ = ["SCORERS", "Blame", "CallableScorer", "RewardFunctionScorer", "ScoreResult", "Scorer", "failure_kind", "make_scorer", "register_scorer",
           "summarize_scores"]
