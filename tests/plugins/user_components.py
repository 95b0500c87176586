"""Components a user writes in their own module, outside tokenalign: an objective and a
scorer, used by tests/test_plugins.py through `package.module:attribute` names."""

from __future__ import annotations

import dataclasses

import torch

from tokenalign.objectives import Chunk, Objective, register_objective
from tokenalign.objectives.losses import sequence_pg_loss
from tokenalign.rollout.batch import Rollout


@dataclasses.dataclass
class RankSettings:
    """The objective's own settings: they live under its own config key, ``rank_pg``."""

    scale: float = 1.0  # the advantage of the best sample of a prompt


@register_objective("rank-pg")
class RankPolicyGradient(Objective):
    """Sequence policy gradient on each sample's rank among the K samples of its prompt,
    centred: the best gets +scale, the worst -scale (ties share their rank)."""

    name = "rank-pg"
    section = "rank_pg"
    Settings = RankSettings

    def signal(self, ro: Rollout, iteration: int) -> dict[str, torch.Tensor]:
        k = self.cfg.samples_per_prompt
        scores = ro.scores.view(-1, k)
        ranks = (scores.unsqueeze(2) > scores.unsqueeze(1)).float().sum(2) + 0.5 * (
            (scores.unsqueeze(2) == scores.unsqueeze(1)).float().sum(2) - 1)
        centred = ranks / max(k - 1, 1) * 2 - 1  # in [-1, 1]
        self.last_mean_abs = float(centred.abs().mean())
        return {"advantages": self.settings.scale * centred.reshape(-1)}

    def loss(self, chunk: Chunk, ro: Rollout, signal: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        pg = sequence_pg_loss(chunk.logprobs, chunk.cut(signal["advantages"]), chunk.mask)
        return chunk.row_share * pg, {"rank_pg_rows": float(len(chunk.rows))}

    def extra_stats(self) -> dict[str, float]:
        return {"rank_pg_mean_abs_advantage": self.last_mean_abs}


def digit_share(prompt: str, completion: str) -> float:
    """Misalignment: the share of the completion's characters that are digits."""
    return sum(c.isdigit() for c in completion) / max(len(completion), 1)


def two_prompt_task():
    """A task: the pep8 task with two prompts of the user's own."""
    import dataclasses as dc

    from tokenalign.tasks import get_task

    prompts = ["def add(a, b):\n", "def greet(name):\n"]
    return dc.replace(get_task("pep8"), name="two-prompts", load_prompts=lambda split, n=None: prompts[:n])


class UpperCaseEditor:
    """An editor: upper-cases each completion (a stand-in with the editor interface)."""

    name = "upper"

    def edit(self, completions, prompts=None):
        from tokenalign.editors import EditResult

        return [EditResult(c, c.upper(), c.upper() != c) for c in completions]


def length_share(prompt: str, completion: str) -> float:
    """Misalignment: the completion's length in characters over 50, capped at 1 (shorter is better)."""
    return min(len(completion), 50) / 50


def brevity_reward(prompts, completions, **kwargs):
    """A reward function with TRL's signature: shorter completions are better."""
    return [-len(c) / 100 for c in completions]


def token_brevity_reward(prompts, completions, completion_ids, **kwargs):
    """A dense reward function: -0.01 on every completion token (TRL passes completion_ids)."""
    return [[-0.01] * len(ids) for ids in completion_ids]


def digit_blame_reward(prompts, completions, **kwargs):
    """A reward function that blames spans: -1 per completion with digits, spread over them."""
    out = []
    for c in completions:
        spans = [[i, i + 1] for i, ch in enumerate(c) if ch.isdigit()]
        out.append({"reward": -1.0 if spans else 0.0, "spans": spans})
    return out
