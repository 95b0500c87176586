"""tokenalign: align language models with token-level guidance grounded in preferences.

Sequence-level preferences (pairs, rankings, minimal edits, scored text) become
token-level rewards, which then train the language model. See README.md and
docs/architecture.md for the map of the package.
"""

from __future__ import annotations

import logging

__version__ = "0.1.0"

logging.getLogger(__name__).addHandler(logging.NullHandler())

__all__ = ["__version__", "Trainer", "TrainConfig"]


def __getattr__(name: str):
    """The Python API, imported on first use (``import tokenalign`` stays light)."""
    if name == "Trainer":
        from tokenalign.jobs.api import Trainer

        return Trainer
    if name == "TrainConfig":
        from tokenalign.policy.config import TrainConfig

        return TrainConfig
    raise AttributeError(f"module 'tokenalign' has no attribute {name!r}")
