"""Experiment trackers and console output: ``report_to`` is checked at config time, a tiny
policy run and a reward learner write tensorboard scalars of every metrics row, reward
learning writes per-step rows that survive a resume, and metric lines are one line each,
shown even without a logging setup."""

from __future__ import annotations

import io
import json
import logging
import random

import pytest
import torch

from conftest import LikedTokens, build_tiny_lm, fit_until_killed
from tokenalign.errors import ConfigError
from tokenalign.policy.config import TrainConfig
from tokenalign.rewards.learn import RankedExample, RewardLearnConfig, RewardLearner
from tokenalign.rollout.generate import SamplingSettings
from tokenalign.utils.tracking import resolve_report_to

PROMPTS = ["def add(a, b):\n", "x = ", "class Point:\n", "import os"]


def scalars(folder) -> dict[str, list[tuple[int, float]]]:
    """Every scalar tag of the tensorboard event files in ``folder``: [(step, value)]."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(folder))
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


# ---- report_to -----------------------------------------------------------------------
def test_report_to_names_are_checked_when_the_config_loads():
    from tokenalign.config import load_config

    assert resolve_report_to("none") == resolve_report_to("") == resolve_report_to(None) == resolve_report_to([]) == []
    with pytest.raises(ConfigError, match="unknown tracker 'tensorbord' \\(did you mean tensorboard\\?\\)"):
        load_config(TrainConfig, overrides=["report_to=tensorbord"])
    with pytest.raises(ConfigError, match="learn: report_to: unknown tracker 'neptune'"):
        from tokenalign.jobs.reward import RewardRunConfig

        load_config(RewardRunConfig, overrides=["data.train=x.jsonl", "learn.report_to=[neptune]"])
    for missing in ("wandb", "mlflow"):
        try:
            __import__(missing)
        except ImportError:
            with pytest.raises(ConfigError, match=f"report_to {missing} needs the {missing} package: pip install {missing}"):
                load_config(TrainConfig, overrides=[f"report_to={missing}"])


def test_align_guidance_logs_to_the_policy_trackers():
    from tokenalign.jobs.align import AlignConfig

    cfg = AlignConfig()
    cfg.guidance.learn.report_to = "tensorboard"
    pytest.importorskip("tensorboard")
    with pytest.raises(ConfigError, match="set policy.report_to instead"):
        cfg.validate()


# ---- policy training -----------------------------------------------------------------
def test_a_policy_run_logs_every_row_to_tensorboard(tiny_tokenizer, tmp_path, caplog):
    pytest.importorskip("tensorboard")
    from tokenalign.policy.trainer import PolicyTrainer

    cfg = TrainConfig(objective="rloo", iterations=3, prompts_per_iteration=2, samples_per_prompt=2, lr=1e-2,
                      mixed_precision="no", save_every=0, sampling=SamplingSettings(max_new_tokens=4), report_to="tensorboard")
    cfg.reward.placement = "sequence"
    tok = tiny_tokenizer
    trainer = PolicyTrainer(cfg, build_tiny_lm(tok), tok, LikedTokens(len(tok)), PROMPTS, ref_policy=build_tiny_lm(tok),
                            out_dir=tmp_path)
    trainer.record({"iteration": 0, "eval_mean_misalignment": 0.5})  # the initial evaluation's row
    with caplog.at_level(logging.INFO, logger="tokenalign"):
        rows = trainer.fit()
    trainer.close()

    logged = scalars(tmp_path / "tensorboard" / "tokenalign")
    assert [step for step, _ in logged["reward"]] == [1, 2, 3]
    assert [v for _, v in logged["reward"]] == pytest.approx([r["reward"] for r in rows])
    assert logged["eval_mean_misalignment"] == [(0, 0.5)]
    assert "iteration" not in logged and {"loss", "samples_seen"} <= set(logged)
    # one compact line per iteration: key=value, 4 significant digits, no JSON
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("iteration ")]
    assert len(lines) == 3 and "{" not in lines[0] and f"reward={rows[0]['reward']:.4g} " in lines[0]


def test_a_run_without_out_dir_cannot_report():
    from tokenalign.utils.tracking import accelerator_kwargs

    with pytest.raises(ConfigError, match="give the run an out_dir"):
        accelerator_kwargs(["tensorboard"], None)


# ---- reward learning -----------------------------------------------------------------
WORDS = ["ctx"] + [f"g{i}" for i in range(6)] + [f"b{i}" for i in range(3)]


def word_tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(["<pad>", "<s>"] + WORDS)}, unk_token="<pad>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="<s>")


def ranked_lists(n: int) -> list[RankedExample]:
    rng = random.Random(0)
    out = []
    for _ in range(n):
        responses = tuple(" " + " ".join(rng.choice(WORDS[1:]) for _ in range(4)) for _ in range(3))
        out.append(RankedExample("ctx", responses, tuple(-float(r.count(" b")) for r in responses)))
    return out


def tiny_reward_model():
    from transformers import GPT2Config, GPT2Model

    from tokenalign.rewards.model import TokenRewardHeadConfig, TokenRewardModel

    torch.manual_seed(0)
    return TokenRewardModel(GPT2Model(GPT2Config(vocab_size=len(WORDS) + 2, n_embd=16, n_layer=1, n_head=2, n_positions=32)),
                            TokenRewardHeadConfig(hidden_size=16))


def test_reward_learning_logs_per_step_rows_and_tensorboard(tmp_path, caplog):
    pytest.importorskip("tensorboard")
    cfg = RewardLearnConfig(epochs=2, batch_size=4, lr=1e-3, mixed_precision="no", log_every=2, report_to="tensorboard")
    learner = RewardLearner(tiny_reward_model(), word_tokenizer(), cfg, out_dir=tmp_path)
    with caplog.at_level(logging.INFO, logger="tokenalign"):
        history = learner.fit(ranked_lists(16))  # 4 steps an epoch

    steps = [json.loads(x) for x in (tmp_path / "steps.jsonl").read_text().splitlines()]
    assert [r["step"] for r in steps] == [2, 4, 6, 8]
    assert [r["epoch"] for r in steps] == [0.5, 1.0, 1.5, 2.0]
    assert {"loss", "accuracy", "lr", "examples_per_second"} <= set(steps[0]) and 0 <= steps[0]["accuracy"] <= 1
    assert "train_accuracy" in history[0]
    logged = scalars(tmp_path / "tensorboard" / "tokenalign")
    assert logged["loss"] == [(r["step"], pytest.approx(r["loss"])) for r in steps]
    assert [s for s, _ in logged["train_loss"]] == [4, 8]
    lines = [r.getMessage() for r in caplog.records if "reward learning step" in r.getMessage()]
    assert len(lines) == 4 and lines[0].startswith("reward learning step 2: epoch=0.5 loss=")


def test_per_step_rows_are_redone_once_after_a_resume(tmp_path):
    pytest.importorskip("tensorboard")
    from tokenalign.rewards.model import TokenRewardModel

    cfg = RewardLearnConfig(epochs=1, batch_size=2, lr=1e-3, mixed_precision="no", log_every=1, save_every=3,
                            report_to="tensorboard")
    tok, train = word_tokenizer(), ranked_lists(12)
    part = RewardLearner(tiny_reward_model(), tok, cfg, out_dir=tmp_path)
    fit_until_killed(lambda kill: part.fit(train, on_step=kill), at=5, counter="step")
    assert len((tmp_path / "steps.jsonl").read_text().splitlines()) == 5
    ckpt = tmp_path / "checkpoint"
    RewardLearner(TokenRewardModel.from_pretrained(ckpt / "model"), tok, cfg, out_dir=tmp_path).fit(train, resume_from=ckpt)
    rows = [json.loads(x) for x in (tmp_path / "steps.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3, 4, 5, 6]
    # tensorboard too: the killed run's steps 4 and 5 are purged, each step is logged once
    assert scalars(tmp_path / "tensorboard" / "tokenalign")["loss"] == [(r["step"], pytest.approx(r["loss"])) for r in rows]


# ---- console output ------------------------------------------------------------------
def test_metric_lines_are_compact_and_never_wrapped():
    from rich.console import Console

    from tokenalign.utils.logging import OneLineHandler
    from tokenalign.utils.metrics import format_metrics

    row = {"iteration": 3, "reward": 0.123456, "kl": 1234567.0, "samples": 8, "name": "a b"}
    assert format_metrics(row) == "reward=0.1235 kl=1.235e+06 samples=8 name=a_b"
    out = io.StringIO()
    handler = OneLineHandler(console=Console(file=out, width=40), show_path=False, show_time=False, markup=False)
    logger = logging.Logger("isolated")
    logger.addHandler(handler)
    message = "iteration 3: " + " ".join(f"metric_{i}=0.1235" for i in range(20))
    logger.warning(message)
    assert out.getvalue().splitlines() == [f"WARNING  {message}"]


def test_training_progress_prints_metric_lines_when_no_log_shows_them(capsys):
    from tokenalign.utils.logging import TrainingProgress, logs_shown

    quiet = logging.Logger("no-handlers")  # Python or a notebook without a logging setup
    assert not logs_shown(quiet)
    with TrainingProgress(quiet, "fit", total=2) as bar:
        bar.line("iteration %d: %s", 1, "reward=0.5")
        bar.update(advance=1)
    assert "iteration 1: reward=0.5" in capsys.readouterr().err

    shown = logging.Logger("with-handler")  # the CLI: the log shows the line, printed once
    records: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: records.append(record.getMessage())
    shown.addHandler(handler)
    assert logs_shown(shown)
    with TrainingProgress(shown, "fit", total=2) as bar:
        bar.line("iteration %d: %s", 1, "reward=0.5")
    assert records == ["iteration 1: reward=0.5"] and "reward=0.5" not in capsys.readouterr().err
