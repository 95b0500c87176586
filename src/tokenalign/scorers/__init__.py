"""Sequence-level preference sources (scorers) and their gold token blame."""

from tokenalign.scorers.base import Blame, CallableScorer, ScoreResult, Scorer, failure_kind, summarize_scores

__all__ = ["Blame", "CallableScorer", "ScoreResult", "Scorer", "failure_kind", "summarize_scores"]
