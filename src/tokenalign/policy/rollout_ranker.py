"""The reward source of the alternating loop: r_φ's token rewards, and each rollout ranked.

``tokenalign align`` trains the policy against the learned token guidance r_φ alone; the
same rollouts, ranked by the task's preference source, are r_φ's next training data and
its held-out test. :class:`RolloutRanker` does both in one pass over a rollout.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from tokenalign.policy.rewards import RewardOutput
from tokenalign.rewards.ranking import group_ranked_lists, sequence_scores
from tokenalign.utils.accel import gather_lists
from tokenalign.utils.io import append_jsonl
from tokenalign.utils.runfolder import is_main_rank

__all__ = ["RolloutRanker"]


class RolloutRanker:
    """The policy's reward source (r_φ), which also ranks each rollout with the preference
    source, for r_φ's next round and to measure r_φ on samples it never saw.

    The preference scores never reach the policy: the rewards returned are r_φ's alone
    (the scorer's results only ride along as ``details``, for the logged
    ``train_misalignment``). Each rollout's lists are appended to ``path`` with the
    iteration and r_φ's own sequence scores of them (aggregated as in learning), so a
    resumed run has them and held-out ranking accuracy can be computed afterwards. In a
    run of several processes every process ranks its share and the main process writes all.
    """

    def __init__(self, inner, scorer, text_fn, k: int, path: Path, iteration: Callable[[], int], aggregator: str,
                 beta: float) -> None:
        self.inner, self.scorer, self.text_fn, self.k, self.path = inner, scorer, text_fn, k, path
        self.iteration, self.aggregator, self.beta = iteration, aggregator, beta  # iteration(): the trainer's current one

    def __call__(self, samples) -> RewardOutput:
        out = self.inner(samples)
        texts = [self.text_fn(s.completion, s.finished) for s in samples]
        results = self.scorer.score(texts, [s.prompt for s in samples])
        keep_empty = bool(getattr(getattr(self.inner.model, "head_config", None), "end_token", False))
        lists = group_ranked_lists([s.prompt for s in samples], texts, [-r.misalignment for r in results], self.k, keep_empty)
        rows = [{"iteration": self.iteration(), "prompt": ex.prompt, "responses": list(ex.responses), "scores": list(ex.scores),
                 "guidance_scores": sequence_scores([out.details[j].rewards for j in keep], self.aggregator, self.beta)}
                for ex, keep in lists]
        rows = gather_lists(rows)  # every process's share of the rollout; the main process writes them
        if is_main_rank():
            for row in rows:
                append_jsonl(self.path, row)
        return RewardOutput(out.scores, out.token_rewards, list(results))
