"""Sequence-level preference sources ("scorers") and what they return.

A scorer maps (prompt, completion) pairs to a misalignment score (lower is better) and,
where it can, the character spans of the completion it blames — the "gold blame" against
which learned token rewards are judged. A sample the scorer cannot judge (syntax failure,
checker crash, empty completion) is *failed*: it gets the scorer's fixed failure score and
is counted, never dropped.

Failure reasons start with a kind: ``"syntax: ..."``, ``"crash: ..."`` or
``"empty completion"``; :func:`failure_kind` reads it back.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Callable, Sequence
from typing import Protocol

from tokenalign.registry import Registry

log = logging.getLogger(__name__)

__all__ = ["Blame", "ScoreResult", "Scorer", "CallableScorer", "RewardFunctionScorer", "failure_kind", "summarize_scores",
           "SCORERS",
           "register_scorer", "make_scorer"]

SCORERS: Registry = Registry("scorer", builtins="tokenalign.scorers.pep8")
register_scorer = SCORERS.register


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


def failure_kind(result: ScoreResult) -> str | None:
    """``"syntax"``, ``"crash"``, ``"empty"`` or ``"other"`` for a failed result; None if it did not fail."""
    if not result.failed:
        return None
    reason = result.failure or ""
    for kind in ("syntax", "crash", "empty"):
        if reason.startswith(kind):
            return kind
    return "other"


def check_lengths(completions: Sequence[str], prompts: Sequence[str] | None) -> list[str]:
    """The prompts as a list (empty strings when None), after checking there is one per completion."""
    if prompts is None:
        return [""] * len(completions)
    prompts = list(prompts)
    if len(prompts) != len(completions):
        raise ValueError(f"{len(prompts)} prompts for {len(completions)} completions")
    return prompts


class CallableScorer:
    """Wrap ``fn(prompt, completion) -> float`` (misalignment) as a scorer.

    An exception or a non-finite value fails that sample only (``crash: ...``) with
    ``failure_score``; it is logged once per exception type.
    """

    def __init__(self, fn: Callable[[str, str], float], name: str = "callable", failure_score: float = 1.0) -> None:
        self.fn, self.name, self.failure_score = fn, name, failure_score
        self.crashes = 0
        self._logged: set[str] = set()

    def score(self, completions: Sequence[str], prompts: Sequence[str] | None = None) -> list[ScoreResult]:
        out = []
        for p, c in zip(check_lengths(completions, prompts), completions):
            try:
                value = float(self.fn(p, c))
                if not math.isfinite(value):
                    raise ValueError(f"score is {value}")
                out.append(ScoreResult(value, n_chars=len(c)))
            except Exception as err:  # a scorer crash fails one sample, never the batch
                self.crashes += 1
                kind = type(err).__name__
                if kind not in self._logged:
                    self._logged.add(kind)
                    log.warning("scorer %s raised %s: %s; the sample is scored as a failure", self.name, kind, err)
                out.append(ScoreResult(self.failure_score, n_chars=len(c), failed=True, failure=f"crash: {kind}: {err}"))
        return out


class RewardFunctionScorer:
    """Wrap a TRL-style reward function ``fn(prompts, completions, **kwargs) -> list[float]``
    (higher is better) as a scorer: misalignment = -reward, so a reward source built on
    it (``reward.source: scorer``) trains on exactly the function's rewards. A ``None`` or
    non-finite reward fails that sample (``crash: ...``) with ``failure_score``; an
    exception fails the batch's samples, logged once per exception type.
    """

    def __init__(self, fn: Callable[..., Sequence[float | None]], name: str = "reward function",
                 failure_score: float = 1.0) -> None:
        self.fn, self.name, self.failure_score = fn, name, failure_score
        self._logged: set[str] = set()

    def _failed(self, completion: str, reason: str) -> ScoreResult:
        return ScoreResult(self.failure_score, n_chars=len(completion), failed=True, failure=f"crash: {reason}")

    def score(self, completions: Sequence[str], prompts: Sequence[str] | None = None) -> list[ScoreResult]:
        prompts = check_lengths(completions, prompts)
        try:
            rewards = list(self.fn(prompts=list(prompts), completions=list(completions)))
            if len(rewards) != len(completions):
                raise ValueError(f"returned {len(rewards)} rewards for {len(completions)} completions")
        except Exception as err:  # a reward function's failure fails its samples, never the run
            kind = type(err).__name__
            if kind not in self._logged:
                self._logged.add(kind)
                log.warning("reward function %s raised %s: %s; its samples are scored as failures", self.name, kind, err)
            return [self._failed(c, f"{kind}: {err}") for c in completions]
        out = []
        for c, r in zip(completions, rewards):
            ok = r is not None and math.isfinite(float(r))
            out.append(ScoreResult(-float(r), n_chars=len(c)) if ok else self._failed(c, f"reward is {r}"))
        return out


def _is_reward_function(fn: Callable) -> bool:
    """TRL's reward-function signature: keyword parameters ``prompts`` and ``completions``."""
    import inspect

    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False
    return "prompts" in params and "completions" in params


def summarize_scores(results: Sequence[ScoreResult]) -> dict[str, float]:
    """What every evaluation reports for a batch: misalignment beside the failure counts.

    ``mean_misalignment`` includes failed samples at their failure score (so breaking
    syntax never looks like an improvement); ``mean_misalignment_valid`` is over the
    samples that did not fail. Rates are shares of all samples; ``n_*`` are counts.
    """
    n = len(results)
    if n == 0:
        return {"n": 0}
    values = [r.misalignment for r in results]
    ok = [r.misalignment for r in results if not r.failed]
    kinds = [failure_kind(r) for r in results]
    mean = sum(values) / n
    counts = {kind: sum(1 for k in kinds if k == kind) for kind in ("syntax", "crash", "empty")}
    n_failed = sum(1 for k in kinds if k is not None)
    return {
        "n": n,
        "mean_misalignment": mean,
        "std_misalignment": math.sqrt(sum((v - mean) ** 2 for v in values) / n),
        "mean_misalignment_valid": sum(ok) / len(ok) if ok else float("nan"),
        "violation_free_rate": sum(1 for r in results if not r.failed and r.n_violations == 0) / n,
        "syntax_failure_rate": counts["syntax"] / n,
        "crash_rate": counts["crash"] / n,
        "empty_rate": counts["empty"] / n,
        "failure_rate": n_failed / n,
        "n_syntax_failures": counts["syntax"],
        "n_crashes": counts["crash"],
        "n_failed": n_failed,
    }


def make_scorer(spec: str) -> Scorer:
    """The scorer a config names: a registered name or ``package.module:attribute`` that
    is a scorer class (built with no arguments), a scorer instance (has ``score``), a TRL
    reward function ``fn(prompts, completions, **kwargs) -> rewards`` (higher is better),
    or a function ``fn(prompt, completion) -> misalignment`` (lower is better)."""
    from tokenalign.errors import ConfigError

    obj = SCORERS.get(spec)
    if isinstance(obj, type):
        obj = obj()
    if callable(getattr(obj, "score", None)):
        return obj
    if callable(obj):
        return RewardFunctionScorer(obj, name=spec) if _is_reward_function(obj) else CallableScorer(obj, name=spec)
    raise ConfigError(f"scorer {spec!r} is neither a scorer (with .score) nor a function (prompt, completion) -> float")
