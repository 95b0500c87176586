"""``tokenalign train``: build the models, reward source and prompts of a task, and train.

The run folder gets config.yaml, metrics.jsonl, checkpoint/ (resumed from automatically
when present), model/ (the trained policy, loadable with ``from_pretrained``),
summary.json and report.html (training curves and held-out evaluation), and the
``report_to`` trackers' files (tensorboard/, wandb/, mlruns/). The run holds the folder's
lock while it runs, and resumes only with the config it started with
(:func:`~tokenalign.utils.runfolder.open_run_folder`; :data:`MAY_CHANGE` may differ).
"""

from __future__ import annotations

import logging
from pathlib import Path
from collections.abc import Callable
from typing import Any

import torch

from tokenalign.data import load_prompts
from tokenalign.data.prompts import render_prompts, train_and_eval_prompts
from tokenalign.policy.config import TrainConfig
from tokenalign.rewards.model_scorers import load_scorer
from tokenalign.rollout.generate import fit_prompts
from tokenalign.tasks import get_task, task_defaults
from tokenalign.utils.lora import wrap_lora
from tokenalign.utils.metrics import MetricsWriter
from tokenalign.utils.models import check_model_path, is_encoder_decoder, lm_auto_class, load_causal_lm

log = logging.getLogger(__name__)

__all__ = ["TrainConfig", "build_trainer", "run_train", "write_initial_eval", "finish_run", "MAY_CHANGE"]

# Keys a resumed run may change: how far it goes (extending a run), when it stops, its progress bar.
MAY_CHANGE = ("iterations", "stop_after_iterations", "progress")


def build_trainer(cfg: TrainConfig, out: Path | None = None, reward_source: Callable[[Any], Any] | None = None, *,
                  prompts: Any = None, eval_prompts: Any = None, scorer: Any = None):
    """The trainer for ``cfg``, resuming from ``out/checkpoint`` when it holds one. The
    policy may be a causal LM or an encoder-decoder (``lm_auto_class`` reads its config).

    ``reward_source(tokenizer)``: builds the reward source instead of ``cfg.reward.source``
    (the align job's learned guidance, built around the policy's tokenizer). ``prompts``,
    ``eval_prompts`` (a ``datasets.Dataset``, a list of strings or dicts) and ``scorer`` (a
    scorer object or reward function) stand in for the config's names of them (Python use)."""
    from tokenalign.evaluate.policy_eval import evaluate_policy
    from tokenalign.policy.rewards import make_reward_source
    from tokenalign.policy.trainer import PolicyTrainer
    from tokenalign.policy.value import ValueModel

    cfg.validate_sources()
    task = get_task(cfg.task)
    scorer = load_scorer(scorer if scorer is not None else cfg.scorer)
    # align on human rankings alone needs no scorer when it evaluates nothing
    init, scorer = task_defaults(task, cfg.model, scorer, need_scorer=reward_source is None or bool(cfg.eval.every))
    if task.name == "pep8" and (prompts is not None or cfg.prompts):
        log.warning("prompts of your own with task 'pep8': its stop strings, line completion and base model apply "
                    "(set task: text for free text)")
    train_prompts, eval_prompts = _prompt_sets(cfg, task, prompts, eval_prompts)
    ckpt = out / "checkpoint" if out is not None else None
    resume = ckpt is not None and (ckpt / "state.json").is_file()
    torch.manual_seed(cfg.seed)
    if cfg.lora.enabled:
        policy, tokenizer = load_causal_lm(init)
        task_type = "SEQ_2_SEQ_LM" if is_encoder_decoder(policy) else "CAUSAL_LM"
        policy = wrap_lora(policy, cfg.lora, task_type, ckpt / "policy" if resume else None)
        ref = None  # the adapter-free base
    else:
        policy, tokenizer = load_causal_lm(str(ckpt / "policy") if resume else init)
        ref_path = cfg.ref_model or init
        check_model_path(ref_path)
        ref = lm_auto_class(ref_path).from_pretrained(ref_path)
    train_prompts = render_prompts(train_prompts, tokenizer, init)
    eval_prompts = render_prompts(eval_prompts, tokenizer, init)
    objective = cfg.objective_class
    conditioning = objective.prepare_policy(cfg, policy, tokenizer)
    train_prompts = fit_prompts(train_prompts, tokenizer, policy, cfg.sampling, conditioning)
    eval_prompts = fit_prompts(eval_prompts, tokenizer, policy, cfg.eval.sampling, conditioning)
    value = None
    if objective.needs_value_model:
        value = ValueModel.from_pretrained(ckpt / "value") if resume else ValueModel.from_backbone(init)
        if not resume and cfg.lora.enabled and getattr(cfg.objective_settings, "value_lora", True):
            value.add_lora(cfg.lora)  # resumed: the adapters come with checkpoint/value

    if reward_source is not None:
        reward = reward_source(tokenizer)
    else:
        reward = make_reward_source(cfg.reward, scorer, task.text_fn, tokenizer, init)

    data = objective.training_data(cfg, task, tokenizer, policy, conditioning)

    def evaluate_fn(trainer: PolicyTrainer) -> dict[str, float]:
        # Before training, a conditional model is the base model with two unused tokens:
        # evaluate it unconditioned (its control tokens mean nothing yet).
        cond = conditioning if trainer.iteration > 0 else None
        with trainer.accelerator.autocast():
            return evaluate_policy(trainer.unwrapped_policy, trainer.tokenizer, eval_prompts, scorer, cfg.eval,
                                   list(task.stop), task.text_fn, trainer.ref_logprobs, conditioning=cond)

    trainer = PolicyTrainer(cfg, policy, tokenizer, reward, train_prompts, ref_policy=ref, value_model=value,
                            stop=list(task.stop), evaluate_fn=evaluate_fn if cfg.eval.every else None,
                            data=data, out_dir=out)
    if not resume and trainer.metrics is not None:
        trainer.metrics.trim(0)  # a run killed before its first checkpoint starts over: its rows are redone
    return trainer, (ckpt if resume else None)


def _prompt_sets(cfg: TrainConfig, task, prompts: Any, eval_prompts: Any) -> tuple[list, list]:
    """Training and held-out prompts: given in Python, named by the config, or the task's
    splits (:func:`~tokenalign.data.prompts.train_and_eval_prompts` holds some out of a
    source without held-out prompts of its own)."""
    source = prompts if prompts is not None else cfg.prompts or None
    held = eval_prompts if eval_prompts is not None else cfg.eval_prompts or None
    if source is None:
        train = task.prompts("train")
        if held is None:
            return train, task.prompts("test", cfg.eval.prompts)
        return train, load_prompts(held, cfg.eval_prompts_split)[: cfg.eval.prompts]
    return train_and_eval_prompts(source, held, split=cfg.prompts_split, eval_split=cfg.eval_prompts_split,
                                  n_eval=cfg.eval.prompts, seed=cfg.seed)


def run_train(cfg: TrainConfig, allow_config_change: bool = False) -> dict[str, Any]:
    """Train as configured; returns the summary (also written to out_dir/summary.json).

    ``allow_config_change``: resume a run whose saved config differs from ``cfg`` in keys
    other than :data:`MAY_CHANGE` (by default that refuses, listing the differences)."""
    from tokenalign.config import config_to_yaml
    from tokenalign.utils.runfolder import open_run_folder

    out = Path(cfg.out_dir)
    with open_run_folder(out, config_to_yaml(cfg), may_change=MAY_CHANGE, allow_config_change=allow_config_change):
        trainer, resume_from = build_trainer(cfg, out)
        write_initial_eval(trainer, resuming=resume_from is not None)
        trainer.fit(resume_from=resume_from)
        summary = finish_run(trainer, cfg, out)
        trainer.close()
    return summary


def write_initial_eval(trainer, resuming: bool) -> None:
    """The held-out evaluation of the initial policy, as the run's iteration-0 metrics row.

    Written once per run: not when resuming, nor when the file has the row already (a run
    killed before its first checkpoint keeps it); evaluated on the main process only, like
    the trainer's own evaluations."""
    metrics = trainer.metrics
    if resuming or trainer.evaluate_fn is None or metrics is None or not trainer.accelerator.is_main_process:
        return
    if any(row.get("iteration", 0) == 0 for row in metrics.rows()):
        return
    trainer.record({"iteration": 0, **{f"eval_{k}": v for k, v in trainer.evaluate_fn(trainer).items()}})


def finish_run(trainer, cfg: TrainConfig, out: Path) -> dict[str, Any]:
    """After training: model/, summary.json and report.html (when all iterations ran)."""
    from tokenalign.utils.io import atomic_write_json

    if not trainer.done:
        log.info("stopped at iteration %d of %d; rerun the same command to resume", trainer.iteration, cfg.iterations)
        return {"iteration": trainer.iteration, "finished": False}
    summary: dict[str, Any] = {"iteration": trainer.iteration, "finished": True, "samples_seen": trainer.samples_seen,
                               "tokens_seen": trainer.tokens_seen}
    if trainer.stopped_early is not None:  # stop_kl ended it: finished, at fewer iterations than configured
        summary["stopped_early"] = trainer.stopped_early
    trainer.save_model(out / "model")  # every process calls it: it waits for the others
    if trainer.accelerator.is_main_process:
        rows = MetricsWriter(out / "metrics.jsonl").rows()
        evals = [r for r in rows if any(k.startswith("eval_") for k in r)]
        if evals:
            summary["before"] = {k[5:]: v for k, v in evals[0].items() if k.startswith("eval_")}
            summary["after"] = {k[5:]: v for k, v in evals[-1].items() if k.startswith("eval_")}
        atomic_write_json(out / "summary.json", summary)
        write_training_report(out, cfg, rows, summary)
    trainer.accelerator.wait_for_everyone()
    return summary


def write_training_report(out: Path, cfg: TrainConfig, rows: list[dict], summary: dict[str, Any]) -> Path:
    """report.html: before/after table and training curves (plots need matplotlib)."""
    from tokenalign.report import Report

    report = Report(f"tokenalign train: {cfg.objective} ({cfg.reward.placement} rewards) on {cfg.task}")
    report.add_text(f"{summary['iteration']} iterations, {summary['samples_seen']} samples, {summary['tokens_seen']} sampled tokens.")
    if "before" in summary:
        report.add_table([{"measure": k, "before": summary["before"].get(k), "after": v} for k, v in summary["after"].items()],
                         title="Held-out evaluation")
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        report.add_text("(install matplotlib for training curves: pip install 'tokenalign[report]')", muted=True)
    else:
        train = [r for r in rows if "reward" in r]
        metric = next((k for k in ("eval_mean_misalignment", "eval_mean_reward") if any(k in r for r in rows)),
                      next((k for r in rows for k in r if k.startswith("eval_mean_") and not k.endswith("_valid")), ""))
        evals = [r for r in rows if metric in r]
        fig, axes = plt.subplots(1, 3, figsize=(13, 3.4))
        axes[0].plot([r["iteration"] for r in train], [r["reward"] for r in train])
        axes[0].set_title("training reward")
        if any("kl" in r for r in train):
            axes[1].plot([r["iteration"] for r in train if "kl" in r], [r["kl"] for r in train if "kl" in r])
            axes[1].set_title("KL(π || π_ref) per sample (rollouts)")
        else:  # PHF objectives train on a corpus: the loss is the curve
            axes[1].plot([r["iteration"] for r in train], [r["loss"] for r in train])
            axes[1].set_title("training loss")
        axes[2].plot([r["iteration"] for r in evals], [r[metric] for r in evals], marker="o", label=metric[len("eval_mean_"):])
        axes[2].plot([r["iteration"] for r in evals], [r["eval_failure_rate"] for r in evals], marker="x", label="failures")
        axes[2].set_title("held-out")
        axes[2].legend()
        for ax in axes:
            ax.set_xlabel("iteration")
        report.add_figure(fig, "Training curves")
        plt.close(fig)
    return report.write(out / "report.html")
