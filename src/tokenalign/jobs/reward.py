"""``tokenalign reward``: learn a token reward model from a data file, end to end.

Loads pairs / ranked lists / edits, builds the model on a backbone, trains with
:class:`~tokenalign.rewards.learn.RewardLearner`, evaluates on held-out data each epoch
(ranking accuracy; token accuracy for edits; localization AUC when a gold-blame scorer
is configured) and writes a run folder: config.yaml, metrics.jsonl (a row per epoch),
steps.jsonl (a row per ``learn.log_every`` steps), checkpoint/, model/, and the
``learn.report_to`` trackers' files. The run holds the folder's lock while it runs and
resumes only with the config it started with (:data:`MAY_CHANGE` may differ).
"""

from __future__ import annotations

import dataclasses
import logging
import random
from pathlib import Path
from typing import Any, Literal

from tokenalign.errors import ConfigError, DataError, TokenalignError
from tokenalign.rewards.learn import LabelledExample, RankedExample, RewardLearnConfig, RewardLearner
from tokenalign.rewards.model import TokenRewardHeadConfig
from tokenalign.utils.lora import LoraSettings

log = logging.getLogger(__name__)

__all__ = ["RewardDataConfig", "RewardRunConfig", "run_reward", "training_examples", "MAY_CHANGE"]

# Keys a resumed run may change: more epochs (extending a run), the progress bar.
MAY_CHANGE = ("learn.epochs", "learn.progress")


@dataclasses.dataclass
class RewardDataConfig:
    """Where the preferences come from."""

    train: str = ""
    format: Literal["pairs", "ranked", "edits"] = "pairs"
    eval: str = ""  # a held-out file; empty: split eval_fraction off the training data
    eval_fraction: float = 0.1
    field_map: dict[str, str] = dataclasses.field(default_factory=dict)
    skip_invalid: bool = False
    limit: int = 0  # use at most this many training records (0: all)


@dataclasses.dataclass
class RewardRunConfig:
    """Config of ``tokenalign reward``."""

    out_dir: str = "runs/reward"
    backbone: str = ""  # local folder or hub id; empty: the shipped pep8 base model
    tokenizer: str = ""  # empty: the backbone's
    data: RewardDataConfig = dataclasses.field(default_factory=RewardDataConfig)
    head: TokenRewardHeadConfig = dataclasses.field(default_factory=TokenRewardHeadConfig)
    learn: RewardLearnConfig = dataclasses.field(default_factory=RewardLearnConfig)
    unchanged: Literal["ignore", "neutral"] = "ignore"  # edits: label policy of unchanged tokens
    trust_remote_code: bool = False
    lora: LoraSettings = dataclasses.field(default_factory=LoraSettings)  # adapters on the backbone; the head trains fully

    def validate(self) -> None:
        if not self.data.train:
            raise ConfigError("data.train is required (a data file or dataset)")
        if not 0.0 <= self.data.eval_fraction < 1.0:
            raise ConfigError("data.eval_fraction must be in [0, 1)")


def training_examples(records: list[Any], fmt: str, tokenizer=None, unchanged: str = "ignore") -> list[Any]:
    """Records -> training examples (ranked lists, or labelled responses for edits)."""
    if any(not isinstance(getattr(r, "prompt", ""), str) for r in records):
        raise DataError("chat-message prompts: reward learning takes text prompts (apply the chat template first); "
                        "objective dpo renders them", field="prompt")
    if fmt == "pairs":
        return [RankedExample(r.prompt, (r.chosen, r.rejected), (1.0, 0.0)) for r in records]
    if fmt == "ranked":
        return [RankedExample(r.prompt, tuple(r.responses), tuple(float(s) for s in r.scores)) for r in records]
    from tokenalign.data.edit_labels import EditLabelConfig, edit_labels

    out = []
    for r in records:
        bad, good = edit_labels(r.original, r.edited, tokenizer, config=EditLabelConfig(unchanged=unchanged))
        out.append(LabelledExample(r.prompt, r.original, tuple(bad.labels)))
        out.append(LabelledExample(r.prompt, r.edited, tuple(good.labels)))
    return out


def run_reward(cfg: RewardRunConfig, allow_config_change: bool = False) -> dict[str, Any]:
    """Run reward learning as configured; returns the final metrics. ``allow_config_change``:
    resume a run whose saved config differs in keys other than :data:`MAY_CHANGE`."""
    from tokenalign.config import config_to_yaml
    from tokenalign.utils.runfolder import open_run_folder

    with open_run_folder(cfg.out_dir, config_to_yaml(cfg), may_change=MAY_CHANGE, allow_config_change=allow_config_change):
        return _run_reward(cfg)


def _run_reward(cfg: RewardRunConfig) -> dict[str, Any]:
    from tokenalign.data import load_records
    from tokenalign.rewards.model import TokenRewardModel
    from tokenalign.rewards.scoring import ranking_accuracy, score_tokens
    from tokenalign.utils.io import atomic_write_json
    from tokenalign.utils.models import load_tokenizer

    out = Path(cfg.out_dir)
    backbone = cfg.backbone
    if not backbone:
        from tokenalign.tasks.pep8 import base_model_path

        backbone = str(base_model_path())
    try:
        tokenizer = load_tokenizer(cfg.tokenizer or backbone, trust_remote_code=cfg.trust_remote_code)
    except OSError as err:
        raise TokenalignError(f"cannot load tokenizer '{cfg.tokenizer or backbone}': {err}") from None
    if not tokenizer.is_fast:
        raise TokenalignError("a fast tokenizer (with offset mapping) is required")

    loaded = load_records(cfg.data.train, cfg.data.format, skip_invalid=cfg.data.skip_invalid, field_map=cfg.data.field_map or None)
    records = list(loaded.records)
    if cfg.data.limit:
        records = records[: cfg.data.limit]
    if cfg.data.eval:
        eval_records = list(load_records(cfg.data.eval, cfg.data.format, skip_invalid=cfg.data.skip_invalid,
                                         field_map=cfg.data.field_map or None).records)
    else:
        rng = random.Random(cfg.learn.seed)
        rng.shuffle(records)
        n_eval = int(round(len(records) * cfg.data.eval_fraction))
        eval_records, records = records[:n_eval], records[n_eval:]
    train = training_examples(records, cfg.data.format, tokenizer, cfg.unchanged)
    held_out = training_examples(eval_records, cfg.data.format, tokenizer, cfg.unchanged)
    log.info("reward learning on %d training and %d held-out examples (%s)", len(train), len(held_out), cfg.data.format)

    import torch

    torch.manual_seed(cfg.learn.seed)  # the head's (and the adapters') initialisation: the same on every run
    model = TokenRewardModel.from_backbone(backbone, cfg.head, trust_remote_code=cfg.trust_remote_code)
    if cfg.lora.enabled:
        model.add_lora(cfg.lora)
    resume = out / "checkpoint" if (out / "checkpoint" / "state.json").is_file() else None
    if resume is not None:
        model = TokenRewardModel.from_pretrained(resume / "model")  # with its adapters when it has them

    def evaluate(m: TokenRewardModel) -> dict[str, float]:
        if not held_out:
            return {}
        if isinstance(held_out[0], RankedExample):
            prompts = [e.prompt for e in held_out for _ in e.responses]
            responses = [r for e in held_out for r in e.responses]
            scored = score_tokens(m, tokenizer, prompts, responses, max_length=cfg.learn.max_length)
            grouped, i = [], 0
            for e in held_out:
                grouped.append(scored[i : i + len(e.responses)])
                i += len(e.responses)
            acc = ranking_accuracy(grouped, [e.scores for e in held_out], cfg.learn.aggregator, cfg.learn.beta)
            return {"eval_ranking_accuracy": acc}
        scored = score_tokens(m, tokenizer, [e.prompt for e in held_out], [e.response for e in held_out],
                              max_length=cfg.learn.max_length)
        right = total = 0
        threshold = 0.0 if cfg.head.bounding in ("centered_sigmoid", "identity") else 0.5
        for s, e in zip(scored, held_out):
            for r, label in zip(s.rewards, e.labels):
                if label in (0.0, 1.0):
                    total += 1
                    right += (r > threshold) == (label == 1.0)
        return {"eval_token_accuracy": right / total if total else float("nan")}

    learner = RewardLearner(model, tokenizer, cfg.learn, out_dir=out, run_config=cfg)
    history = learner.fit(train, evaluate_fn=evaluate, resume_from=resume)
    learner.save_model(out / "model")  # every process: accelerate gathers, the main process writes
    final = history[-1] if history else {}
    if learner.accelerator.is_main_process:
        atomic_write_json(out / "final_metrics.json", final)
    return final
