"""The Python API, shaped like TRL's trainers: a model, an objective, reward functions and a
dataset in; a trained model out.

    trainer = Trainer(model="my-lm", objective="rloo", reward_funcs=my_reward,
                      train_dataset=dataset, args=TrainConfig(task="text", iterations=20))
    trainer.train()
    trainer.save_model("runs/my-lm-aligned")

It is the ``train`` job with Python objects where a config has names: the reference
(and value) model are loaded from ``model``, the run folder is ``args.out_dir`` (a rerun
resumes), and progress shows in a notebook as on a console.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tokenalign.policy.config import TrainConfig

log = logging.getLogger(__name__)

__all__ = ["Trainer"]


class Trainer:
    """Train ``model`` with ``objective`` on the prompts of ``train_dataset``, rewarded by
    ``reward_funcs``.

    - ``model``: a folder or hub id (a causal or encoder-decoder LM).
    - ``objective``: a registered name (``ppo``, ``reinforce``, ``rloo``, ``dpg``, ...),
      ``package.module:Class``, or an ``Objective`` subclass.
    - ``reward_funcs``: a TRL reward function ``fn(prompts, completions, **kwargs) ->
      rewards``, a scorer, a reward-model folder or a registered scorer name, or a list
      of them (their rewards summed, weighted by ``reward_weights``). None: the task's.
    - ``train_dataset`` / ``eval_dataset``: a ``datasets.Dataset``, a list of dicts or
      strings, or a path, with a ``prompt`` field (text or chat messages). Without
      ``eval_dataset``, some training prompts are held out (see ``TrainConfig.eval_prompts``).
    - ``args``: every other setting (default ``TrainConfig(task="text")``).
    """

    def __init__(
        self,
        model: str,
        objective: str | type | None = None,
        reward_funcs: Any = None,
        train_dataset: Any = None,
        eval_dataset: Any = None,
        args: TrainConfig | None = None,
        reward_weights: Sequence[float] | None = None,
    ) -> None:
        from tokenalign.objectives import OBJECTIVES

        cfg = args if args is not None else TrainConfig(task="text")
        changes: dict[str, Any] = {"model": str(model)}
        if isinstance(objective, type):  # a class: registered under its name, as @register_objective does
            if objective.name not in OBJECTIVES.names():
                OBJECTIVES.register(objective.name)(objective)
            objective = objective.name
        if objective is not None and objective != cfg.objective:
            changes["objective"] = objective
            changes["objective_settings"] = None  # the new objective's defaults
        self.args = dataclasses.replace(cfg, **changes)
        self.scorer = _combined_scorer(reward_funcs, reward_weights)
        self.train_dataset, self.eval_dataset = train_dataset, eval_dataset
        self.out = Path(self.args.out_dir)
        self._trainer = None
        self._resume_from = None

    @property
    def policy_trainer(self):
        """The :class:`~tokenalign.policy.trainer.PolicyTrainer` (built on first use)."""
        if self._trainer is None:
            from tokenalign.config import config_to_yaml
            from tokenalign.jobs.train import MAY_CHANGE, build_trainer
            from tokenalign.utils.runfolder import open_run_folder

            with open_run_folder(self.out, config_to_yaml(self.args), may_change=MAY_CHANGE):
                self._trainer, self._resume_from = build_trainer(self.args, self.out, prompts=self.train_dataset,
                                                                 eval_prompts=self.eval_dataset, scorer=self.scorer)
        return self._trainer

    @property
    def model(self):
        """The policy being trained (unwrapped from any distributed wrapper)."""
        return self.policy_trainer.unwrapped_policy

    @property
    def tokenizer(self):
        return self.policy_trainer.tokenizer

    def train(self) -> dict[str, Any]:
        """Train for ``args.iterations`` (resuming from the run folder's checkpoint); returns
        the run summary, with the held-out evaluation before and after."""
        from tokenalign.jobs.train import finish_run, write_initial_eval
        from tokenalign.utils.runfolder import RunLock, is_main_rank

        trainer = self.policy_trainer
        with RunLock(self.out) if is_main_rank() else contextlib.nullcontext():
            write_initial_eval(trainer, resuming=self._resume_from is not None)
            trainer.fit(resume_from=self._resume_from)
            self._resume_from = None
            return finish_run(trainer, self.args, self.out)

    def save_model(self, output_dir: str | Path) -> Path:
        """Write the policy, its tokenizer and config to ``output_dir`` (``from_pretrained`` loads it)."""
        self.policy_trainer.save_model(Path(output_dir))
        return Path(output_dir)


def _combined_scorer(reward_funcs: Any, weights: Sequence[float] | None):
    """One scorer from one or several preference sources (rewards summed with ``weights``)."""
    if reward_funcs is None:
        return None
    from tokenalign.rewards.model_scorers import load_scorer
    from tokenalign.scorers import WeightedSum

    funcs = list(reward_funcs) if isinstance(reward_funcs, (list, tuple)) else [reward_funcs]
    scorers = [load_scorer(f) for f in funcs]
    if len(scorers) == 1 and weights is None:
        return scorers[0]
    return WeightedSum(scorers, weights)
