"""Sequence-level preference sources ("scorers") and what they return.

A scorer maps (prompt, completion) pairs to a misalignment score (lower is better) and,
where it can, the character spans of the completion it blames — the "gold blame" against
which learned token rewards are judged. A sample the scorer cannot judge (syntax failure,
checker crash, empty completion) is *failed*: it gets the scorer's fixed failure score and
is counted, never dropped.

Failure reasons start with a kind: ``"syntax: ..."``, ``"crash: ..."``, ``"limit: ..."``
(a sample over a scorer's size or time limit) or ``"empty completion"``;
:func:`failure_kind` reads it back.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

from tokenalign.registry import Registry

log = logging.getLogger(__name__)

__all__ = ["Blame", "ScoreResult", "Scorer", "CallableScorer", "RewardFunctionScorer", "failure_kind", "summarize_scores", "scorer_metric", "accepts_completion_ids", "WeightedSum",
           "SCORERS",
           "register_scorer", "make_scorer", "as_scorer"]

SCORERS: Registry = Registry("scorer", builtins="tokenalign.scorers.builtins")
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
    # dense rewards, one per completion token (higher is better; they sum to -misalignment),
    # from a reward function that returns them; None: a sequence score only
    token_rewards: list[float] | None = None


class Scorer(Protocol):
    """Anything that scores completions (lower misalignment is better)."""

    name: str

    def score(self, completions: Sequence[str], prompts: Sequence[str] | None = None) -> list[ScoreResult]: ...


def failure_kind(result: ScoreResult) -> str | None:
    """``"syntax"``, ``"crash"``, ``"empty"``, ``"limit"`` (over a scorer's size or time
    limit) or ``"other"`` for a failed result; None if it did not fail."""
    if not result.failed:
        return None
    reason = result.failure or ""
    for kind in ("syntax", "crash", "empty", "limit"):
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
    """Wrap a TRL-style reward function ``fn(prompts, completions, **kwargs) -> list`` as a
    scorer: misalignment = -reward, so a reward source built on it (``reward.source:
    scorer``) trains on exactly the function's rewards.

    Each item the function returns is a reward (higher is better), or dense:

    - a list of numbers, one per completion token (the function gets the policy's token
      ids as ``completion_ids``, as TRL passes them): the reward is their sum, and
      ``reward.source: blame`` puts each on its token;
    - ``{"reward": r, "spans": [[start, end], ...]}``: character spans of the completion
      it blames, over which ``reward.source: blame`` spreads ``r``.

    A ``None``, non-finite or malformed item fails that sample (``crash: ...``) with
    ``failure_score``; an exception fails the batch's samples, logged once per type.
    """

    higher_is_better = True  # reported as "reward" (= -misalignment)

    def __init__(self, fn: Callable[..., Sequence[float | None]], name: str = "reward function",
                 failure_score: float = 1.0) -> None:
        self.fn, self.name, self.failure_score = fn, name, failure_score
        self._logged: set[str] = set()

    def _failed(self, completion: str, reason: str) -> ScoreResult:
        return ScoreResult(self.failure_score, n_chars=len(completion), failed=True, failure=f"crash: {reason}")

    def score(self, completions: Sequence[str], prompts: Sequence[str] | None = None,
              completion_ids: Sequence[Sequence[int]] | None = None) -> list[ScoreResult]:
        prompts = check_lengths(completions, prompts)
        extra = {"completion_ids": [list(ids) for ids in completion_ids]} if completion_ids is not None else {}
        try:
            rewards = list(self.fn(prompts=list(prompts), completions=list(completions), **extra))
            if len(rewards) != len(completions):
                raise ValueError(f"returned {len(rewards)} rewards for {len(completions)} completions")
        except Exception as err:  # a reward function's failure fails its samples, never the run
            kind = type(err).__name__
            if kind not in self._logged:
                self._logged.add(kind)
                log.warning("reward function %s raised %s: %s; its samples are scored as failures", self.name, kind, err)
            return [self._failed(c, f"{kind}: {err}") for c in completions]
        out = []
        for i, (c, r) in enumerate(zip(completions, rewards)):
            try:
                out.append(_reward_result(c, r, len(completion_ids[i]) if completion_ids is not None else None))
            except (TypeError, ValueError, KeyError) as err:
                out.append(self._failed(c, str(err)))
        return out


def _finite(value: Any, what: str) -> float:
    if value is None or isinstance(value, bool):
        raise ValueError(f"{what} is {value!r}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{what} is {value}")
    return value


def _reward_result(completion: str, item: Any, n_tokens: int | None) -> ScoreResult:
    """One reward function item (a reward, per-token rewards, or a reward with blamed spans)
    as a result; raises ValueError/TypeError/KeyError for a malformed one."""
    if isinstance(item, Mapping):
        reward = _finite(item["reward"], "reward")
        blame = []
        for span in item.get("spans", ()):
            start, end = int(span[0]), int(span[1])
            if not 0 <= start < end <= len(completion):
                raise ValueError(f"span {[start, end]} is outside the completion (length {len(completion)})")
            blame.append(Blame(start, end, "reward function"))
        return ScoreResult(-reward, n_violations=len(blame), n_chars=len(completion), blame=blame)
    if isinstance(item, (list, tuple)):
        values = [_finite(v, "a token reward") for v in item]
        if n_tokens is not None and len(values) != n_tokens:
            raise ValueError(f"{len(values)} token rewards for {n_tokens} completion tokens")
        return ScoreResult(-sum(values), n_chars=len(completion), token_rewards=values)
    return ScoreResult(-_finite(item, "reward"), n_chars=len(completion))


def accepts_completion_ids(scorer: Any) -> bool:
    """Whether ``scorer.score`` takes the policy's token ids (``completion_ids=``)."""
    import inspect

    try:
        return "completion_ids" in inspect.signature(scorer.score).parameters
    except (TypeError, ValueError):
        return False


class WeightedSum:
    """Several preference sources as one reward, as TRL sums its ``reward_funcs``:
    ``sum_i w_i * reward_i`` (a misalignment scorer counts as reward -misalignment). A
    sample fails when any source fails it (at the sum of the failure scores); per-token
    rewards are summed when every source gives them, blamed spans are pooled."""

    higher_is_better = True
    metric = "reward"

    def __init__(self, scorers: Sequence[Scorer], weights: Sequence[float] | None = None) -> None:
        weights = [1.0] * len(scorers) if weights is None else [float(w) for w in weights]
        if len(weights) != len(scorers) or not scorers:
            raise ValueError(f"{len(weights)} weights for {len(scorers)} reward sources")
        self.scorers, self.weights = list(scorers), weights
        self.name = " + ".join(f"{w:g} x {getattr(sc, 'name', type(sc).__name__)}" for sc, w in zip(scorers, weights))

    def score(self, completions: Sequence[str], prompts: Sequence[str] | None = None,
              completion_ids: Sequence[Sequence[int]] | None = None) -> list[ScoreResult]:
        per_source = []
        for sc in self.scorers:
            extra = {"completion_ids": completion_ids} if completion_ids is not None and accepts_completion_ids(sc) else {}
            per_source.append(sc.score(completions, prompts, **extra))
        out = []
        for i, c in enumerate(completions):
            results = [rs[i] for rs in per_source]
            misalignment = sum(w * r.misalignment for w, r in zip(self.weights, results))
            failed = [r for r in results if r.failed]
            dense = None
            if all(r.token_rewards is not None for r in results):
                dense = [sum(w * v for w, v in zip(self.weights, vals)) for vals in zip(*(r.token_rewards for r in results))]
            out.append(ScoreResult(misalignment, sum(r.n_violations for r in results), len(c), bool(failed),
                                   failed[0].failure if failed else None, [b for r in results for b in r.blame], dense))
        return out


def _is_reward_function(fn: Callable) -> bool:
    """TRL's reward-function signature: keyword parameters ``prompts`` and ``completions``."""
    import inspect

    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False
    return "prompts" in params and "completions" in params


def scorer_metric(scorer: Any) -> tuple[str, float]:
    """The name a scorer's score is reported under and the sign that turns misalignment
    into it: ``("misalignment", 1.0)`` by default; a reward source (``higher_is_better``)
    reports ``metric`` (default ``"reward"``) = -misalignment."""
    if getattr(scorer, "higher_is_better", False):
        return getattr(scorer, "metric", "reward"), -1.0
    return getattr(scorer, "metric", "misalignment"), 1.0


def summarize_scores(results: Sequence[ScoreResult], scorer: Any = None) -> dict[str, float]:
    """What every evaluation reports for a batch, named after the scorer's metric
    (:func:`scorer_metric`): ``mean_<metric>`` includes failed samples at their failure
    score (so failing never looks like an improvement); ``mean_<metric>_valid`` is over
    the samples that did not fail. Rates are shares of all samples; ``n_*`` are counts.
    A scorer that counts violations and syntax failures (``reports_violations``, as
    pycodestyle's) also gets the violation-free share and the syntax-failure rate; one that
    counts violations only (``counts_violations``, as scrubadub's PII entities) the
    violation-free share.
    """
    n = len(results)
    if n == 0:
        return {"n": 0}
    metric, sign = scorer_metric(scorer)
    values = [sign * r.misalignment for r in results]
    ok = [sign * r.misalignment for r in results if not r.failed]
    kinds = [failure_kind(r) for r in results]
    mean = sum(values) / n
    counts = {kind: sum(1 for k in kinds if k == kind) for kind in ("syntax", "crash", "empty")}
    n_failed = sum(1 for k in kinds if k is not None)
    out = {
        "n": n,
        f"mean_{metric}": mean,
        f"std_{metric}": math.sqrt(sum((v - mean) ** 2 for v in values) / n),
        f"mean_{metric}_valid": sum(ok) / len(ok) if ok else float("nan"),
    }
    reports = scorer is None or getattr(scorer, "reports_violations", False)
    if reports or getattr(scorer, "counts_violations", False):
        out["violation_free_rate"] = sum(1 for r in results if not r.failed and r.n_violations == 0) / n
    if reports:
        out["syntax_failure_rate"] = counts["syntax"] / n
        out["n_syntax_failures"] = counts["syntax"]
    out.update(crash_rate=counts["crash"] / n, empty_rate=counts["empty"] / n, failure_rate=n_failed / n,
               n_crashes=counts["crash"], n_failed=n_failed)
    return out


def make_scorer(spec: str) -> Scorer:
    """The scorer a config names: a registered name or ``package.module:attribute`` that
    is a scorer class (built with no arguments), a scorer instance (has ``score``), a TRL
    reward function ``fn(prompts, completions, **kwargs) -> rewards`` (higher is better),
    or a function ``fn(prompt, completion) -> misalignment`` (lower is better). Reward-model
    folders: :func:`tokenalign.rewards.model_scorers.load_scorer`."""
    return as_scorer(SCORERS.get(spec), name=spec)


def as_scorer(obj: Any, name: str | None = None) -> Scorer:
    """``obj`` as a scorer: a scorer instance as it is, a scorer class built with no
    arguments, a TRL reward function ``fn(prompts, completions, **kwargs) -> rewards``, a
    function ``fn(prompt, completion) -> misalignment``, or a name for :func:`make_scorer`."""
    from tokenalign.errors import ConfigError

    if isinstance(obj, str):
        return make_scorer(obj)
    name = name or getattr(obj, "__name__", type(obj).__name__)
    if isinstance(obj, type):
        obj = obj()
    if callable(getattr(obj, "score", None)):
        return obj
    if callable(obj):
        return RewardFunctionScorer(obj, name=name) if _is_reward_function(obj) else CallableScorer(obj, name=name)
    raise ConfigError(f"scorer {name!r} is neither a scorer (with .score) nor a function (prompt, completion) -> float")
