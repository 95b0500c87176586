"""The objective interface: what one training objective decides in the shared engine.

The policy trainer runs the same iteration for every objective (batch -> rewards ->
signal -> loss -> step); an :class:`Objective` fills in the parts that differ:

- its own settings (a dataclass, under the config key ``section``);
- whether it needs a value model;
- what it trains on each iteration (:meth:`Objective.batch`: the policy's rollouts by
  default, a supervised dataset or a scored corpus for offline objectives);
- how a rollout becomes its training signal (:meth:`Objective.signal`: advantages,
  returns, weights);
- how the minibatches of one update are cut (:meth:`Objective.update_steps`);
- the loss of one chunk of rows (:meth:`Objective.loss`).

A new objective is one module: subclass :class:`Objective`, decorate it with
``@register_objective("name")`` (or name it in a config as ``package.module:Class``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import torch

from tokenalign.errors import ConfigError
from tokenalign.objectives.advantages import kl_penalty
from tokenalign.objectives.losses import masked_mean
from tokenalign.registry import Registry
from tokenalign.rollout.batch import Rollout, TokenBatch

__all__ = ["Objective", "Chunk", "OBJECTIVES", "register_objective", "objective_class", "token_kl"]

OBJECTIVES: Registry[type["Objective"]] = Registry("objective", builtins="tokenalign.objectives")
register_objective = OBJECTIVES.register


def objective_class(name: str) -> type["Objective"]:
    """The objective class called ``name`` (a registered name or ``package.module:Class``)."""
    cls = OBJECTIVES.get(name)
    if not (isinstance(cls, type) and issubclass(cls, Objective)):
        raise ConfigError(f"objective {name!r} is not a tokenalign.objectives.Objective subclass")
    return cls


def token_kl(ro: Rollout, estimator: str) -> torch.Tensor:
    """Per-token KL(π || π_ref) estimate of a rollout, ``[B, R]`` (zero on padding)."""
    return kl_penalty(ro.logprobs, ro.ref_logprobs, ro.batch.response_mask, estimator)


@dataclasses.dataclass
class Chunk:
    """One forward/backward chunk of an update: a few rows of the rollout, trimmed.

    ``token_share`` and ``row_share`` are this chunk's shares of the step's tokens and
    rows: a loss that is a mean over tokens (rows) is multiplied by them, so that the
    accumulated gradient of the chunks is exactly the whole step's.
    """

    batch: TokenBatch  # the chunk's rows, padding columns dropped
    rows: torch.Tensor  # their indices in the rollout
    width: int  # response columns kept
    logprobs: torch.Tensor  # [b, w] current policy, with grad
    neg_entropy: torch.Tensor  # [b, w]
    token_share: float
    row_share: float
    value_model: Any = None  # the (prepared) value model, for objectives that need one

    @property
    def mask(self) -> torch.Tensor:
        return self.batch.response_mask

    def cut(self, t: torch.Tensor) -> torch.Tensor:
        """This chunk's part of a rollout tensor: ``[B]`` -> ``[b]``, ``[B, R]`` -> ``[b, w]``."""
        t = t[self.rows]
        return t if t.dim() == 1 else t[:, : self.width]


class Objective:
    """Base class of training objectives (see the module docstring).

    Subclasses set the class attributes and override what differs from the defaults;
    an instance lives for one training run and may keep state between iterations
    (saved with the trainer's checkpoint by :meth:`save` / :meth:`load`).
    """

    name: ClassVar[str] = ""
    section: ClassVar[str | None] = None  # config key of its settings (e.g. "ppo"); None: it has none
    Settings: ClassVar[type | None] = None  # dataclass of its settings
    needs_value_model: ClassVar[bool] = False
    reports_kl: ClassVar[bool] = True  # rollouts of the policy (not a corpus): KL to the reference is logged

    def __init__(self, cfg: Any, settings: Any = None) -> None:
        self.cfg = cfg
        self.settings = settings

    # ---- configuration ------------------------------------------------------------
    @classmethod
    def check_config(cls, cfg: Any) -> None:
        """Raise :class:`ConfigError` for settings this objective cannot train with."""

    @classmethod
    def check_sources(cls, cfg: Any) -> None:
        """Checks of the built-in reward sources and data it needs (skipped for a custom source)."""

    # ---- building a run (called by the job that builds the trainer) ------------------
    @classmethod
    def prepare_policy(cls, cfg: Any, policy: Any, tokenizer: Any) -> Any:
        """Change the policy before training if the objective needs to (e.g. add control
        tokens); returns how to condition it when sampling (or None)."""
        return None

    @classmethod
    def training_data(cls, cfg: Any, task: Any, tokenizer: Any, policy: Any, conditioning: Any = None) -> list:
        """Offline rows this objective trains on (a supervised set, a scored corpus);
        empty for objectives that train on the policy's own samples."""
        return []

    # ---- life cycle ---------------------------------------------------------------
    def setup(self, trainer: Any) -> None:
        """Called once the trainer has prepared its models."""

    def on_fit_start(self, trainer: Any) -> None:
        """Called at the start of every ``fit`` (after a resume)."""

    def after_update(self, trainer: Any) -> None:
        """Called after each iteration's optimizer steps."""

    def save(self, path: Path) -> None:
        """Write this objective's state into a checkpoint folder."""

    def load(self, path: Path) -> None:
        """Restore the state written by :meth:`save`."""

    # ---- one iteration --------------------------------------------------------------
    def rollout_seed(self, trainer: Any, iteration: int) -> int:
        return self.cfg.seed * 1_000_003 + iteration * 101 + trainer.accelerator.process_index

    def batch(self, trainer: Any, iteration: int) -> Rollout:
        """What this iteration trains on: by default ``samples_per_prompt`` samples of the
        policy for this process's share of the iteration's prompts."""
        return self.sample_rollout(trainer, trainer.iteration_prompts(iteration), self.rollout_seed(trainer, iteration))

    def sample_rollout(self, trainer: Any, prompts: Sequence[str], seed: int) -> Rollout:
        """``samples_per_prompt`` samples for each prompt, as a rollout."""
        k = self.cfg.samples_per_prompt
        return trainer.make_rollout(trainer.sample([p for p in prompts for _ in range(k)], seed), sampled_by="policy")

    def value_lr(self) -> float:
        """Learning rate of the value model (objectives that have one)."""
        return self.cfg.lr

    def rollout_extras(self, trainer: Any, batch: TokenBatch, recorded: torch.Tensor | None, sampled_by: str | None) -> dict:
        """Objective-specific tensors of a rollout, computed with the reference pass."""
        return {}

    def signal(self, ro: Rollout, iteration: int) -> dict[str, torch.Tensor]:
        """The rollout's training signal (``advantages``, and whatever :meth:`loss` reads)."""
        raise NotImplementedError

    def update_steps(self, trainer: Any, ro: Rollout) -> list[list[torch.Tensor]]:
        """Optimizer steps of one update, each a list of row-index chunks: by default one
        step over the whole rollout in length-sorted chunks (gradient accumulation)."""
        return [trainer.length_chunks(ro.batch)]

    def update_temperature(self) -> float:
        """Temperature of the log-probs trained on: the one the rollouts were sampled at."""
        return self.cfg.sampling.temperature

    def loss(self, chunk: Chunk, ro: Rollout, signal: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        """The loss of one chunk, already weighted by its share of the step (see
        :class:`Chunk`), and statistics to add up over the step's chunks."""
        raise NotImplementedError

    def entropy_term(self, chunk: Chunk) -> torch.Tensor | float:
        """``entropy_coef`` x the mean negative entropy of the chunk's tokens (0 when off)."""
        coef = self.cfg.entropy_coef
        return coef * masked_mean(chunk.neg_entropy, chunk.mask) if coef else 0.0

    def extra_stats(self) -> dict[str, float]:
        """Objective-specific metrics of the last iteration."""
        return {}
