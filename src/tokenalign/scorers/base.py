"""Sequence-level preference sources ("scorers") and what they return.

A scorer maps (prompt, completion) pairs to a misalignment score (lower is better) and,
where it can, the character spans of the completion it blames — the "gold blame" against
which learned token rewards are judged. A sample the scorer cannot judge (syntax failure,
checker crash, empty completion) is *failed*: it gets the scorer's fixed failure score and
is counted, never dropped.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from typing import Protocol

__all__ = ["Blame", "ScoreResult", "Scorer", "CallableScorer", "summarize_scores"]


@dataclasses.dataclass(frozen=True)
class Blame:
    """A blamed character span ``[start, end)`` of the completion, with the scorer's code."""

    start: int
    end: int
    code: str
    message: str = ""


@dataclasses.dataclass
class ScoreResult:
    """One sample's score. ``misalignment`` is what rankings and training use."""

    misalignment: float
    n_violations: int = 0
    n_chars: int = 0
    failed: bool = False
    failure: str | None = None
    blame: list[Blame] = dataclasses.field(default_factory=list)


class Scorer(Protocol):
    """Anything that scores completions (lower misalignment is better)."""

    name: str

    def score(self, completions: Sequence[str], prompts: Sequence[str] | None = None) -> list[ScoreResult]: ...


class CallableScorer:
    """Wrap ``fn(prompt, completion) -> float`` (misalignment) as a scorer; NaN fails."""

    def __init__(self, fn: Callable[[str, str], float], name: str = "callable", failure_score: float = 1.0) -> None:
        self.fn, self.name, self.failure_score = fn, name, failure_score

    def score(self, completions: Sequence[str], prompts: Sequence[str] | None = None) -> list[ScoreResult]:
        prompts = prompts if prompts is not None else [""] * len(completions)
        out = []
        for p, c in zip(prompts, completions):
            try:
                value = float(self.fn(p, c))
                if not math.isfinite(value):
                    raise ValueError(f"score is {value}")
                out.append(ScoreResult(value, n_chars=len(c)))
            except Exception as err:  # a scorer crash fails one sample, never the batch
                out.append(ScoreResult(self.failure_score, n_chars=len(c), failed=True, failure=f"crash: {type(err).__name__}: {err}"))
        return out


def summarize_scores(results: Sequence[ScoreResult]) -> dict[str, float]:
    """Mean misalignment, spread, failure rates: what every evaluation reports."""
    n = len(results)
    if n == 0:
        return {"n": 0}
    values = [r.misalignment for r in results]
    ok = [r.misalignment for r in results if not r.failed]
    mean = sum(values) / n
    return {
        "n": n,
        "mean_misalignment": mean,
        "std_misalignment": math.sqrt(sum((v - mean) ** 2 for v in values) / n),
        "mean_misalignment_valid": sum(ok) / len(ok) if ok else float("nan"),
        "violation_free_rate": sum(1 for r in results if not r.failed and r.n_violations == 0) / n,
        "syntax_failure_rate": sum(1 for r in results if r.failed and (r.failure or "").startswith("syntax")) / n,
        "crash_rate": sum(1 for r in results if r.failed and (r.failure or "").startswith("crash")) / n,
        "failure_rate": sum(1 for r in results if r.failed) / n,
    }
