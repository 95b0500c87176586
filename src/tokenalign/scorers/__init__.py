"""Sequence-level preference sources (scorers) and their gold token blame.

``SCORERS`` names the built-in scorers; :func:`make_scorer` turns a config value (a
registered name, ``package.module:attribute`` or a reward-model folder) into a scorer;
:func:`as_scorer` does it for a Python object (a scorer, a TRL reward function).
"""

from tokenalign.scorers.base import (
    SCORERS,
    Blame,
    CallableScorer,
    RewardFunctionScorer,
    ScoreResult,
    Scorer,
    WeightedSum,
    accepts_completion_ids,
    as_scorer,
    failure_kind,
    make_scorer,
    register_scorer,
    scorer_metric,
    summarize_scores,
)

__all__ = ["SCORERS", "Blame", "CallableScorer", "RewardFunctionScorer", "ScoreResult", "Scorer", "failure_kind", "make_scorer", "register_scorer",
           "summarize_scores", "scorer_metric", "as_scorer", "WeightedSum", "accepts_completion_ids"]
