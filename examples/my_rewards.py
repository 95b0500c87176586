"""Reward functions a user writes, with TRL's signature: `fn(prompts, completions, **kwargs)`.

Name them in a config as `examples/my_rewards.py:concise` (a file path) or, with this
folder on the path, `my_rewards:concise`. A TRL user's own reward functions work the same
way, unchanged.
"""

from __future__ import annotations


def concise(prompts, completions, **kwargs):
    """Shorter answers are better: -(words / 50), capped at -1."""
    return [-min(len(c.split()) / 50, 1.0) for c in completions]


def no_shouting(prompts, completions, **kwargs):
    """A dense reward: -0.1 per word written in capitals, blamed on that word's characters
    (with `reward.source: blame`, each word's tokens take its share)."""
    import re

    out = []
    for c in completions:
        spans = [[m.start(), m.end()] for m in re.finditer(r"\b[A-Z]{2,}\b", c)]
        out.append({"reward": -0.1 * len(spans), "spans": spans})
    return out
