"""An objective and a scorer from a module outside tokenalign, named in a config as
`package.module:attribute`, train through `tokenalign train` and through Python."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).parent / "plugins"))

OBJECTIVE = "user_components:RankPolicyGradient"
SCORER = "user_components:digit_share"


def _args(out, *extra):
    base = ["train", "--set", f"out_dir={out}", "--set", "iterations=2", "--set", "prompts_per_iteration=2",
            "--set", "samples_per_prompt=3", "--set", "sampling.max_new_tokens=16", "--set", "eval.every=2",
            "--set", "eval.prompts=2", "--set", "eval.sampling.max_new_tokens=16", "--set", "mixed_precision=no"]
    return base + [x for kv in extra for x in ("--set", kv)]


def test_user_objective_and_scorer_through_the_cli(tmp_path):
    from user_components import digit_share

    from tokenalign.cli import main

    out = tmp_path / "run"
    assert main(_args(out, f"objective={OBJECTIVE}", f"scorer={SCORER}", "rank_pg.scale=2.0")) == 0
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert saved["objective"] == OBJECTIVE and saved["scorer"] == SCORER and saved["rank_pg"] == {"scale": 2.0}
    assert "ppo" not in saved  # only the run's own objective's section is saved
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in rows if "reward" in r]
    assert [r["iteration"] for r in train] == [1, 2]
    for r in train:
        assert r["rank_pg_rows"] == 6.0  # the objective's loss ran on every row (one chunk of 6)
        assert 0.0 <= r["rank_pg_mean_abs_advantage"] <= 1.0
        # the reward is the user's scorer: -(share of digits), the same as its misalignment
        assert r["reward"] == pytest.approx(-r["train_misalignment"])
    # the held-out evaluation scores with the user's scorer too, and names its metrics after it:
    # no pycodestyle syntax failures
    assert "eval_syntax_failure_rate" not in rows[-1] and rows[-1]["eval_failure_rate"] == 0.0
    assert 0.0 <= rows[-1]["eval_mean_misalignment"] <= 1.0
    assert digit_share("", "a1") == 0.5


def test_user_objective_registered_by_name_through_python(tmp_path):
    import user_components  # noqa: F401  (its decorator registers "rank-pg")

    from tokenalign.config import from_dict
    from tokenalign.objectives import OBJECTIVES
    from tokenalign.policy.config import TrainConfig
    from tokenalign.jobs.train import run_train

    assert "rank-pg" in OBJECTIVES
    cfg = from_dict(TrainConfig, {"out_dir": str(tmp_path / "py"), "objective": "rank-pg", "scorer": SCORER,
                                  "rank_pg": {"scale": 0.5}, "iterations": 1, "prompts_per_iteration": 2,
                                  "samples_per_prompt": 2, "sampling": {"max_new_tokens": 12}, "eval": {"every": 0},
                                  "mixed_precision": "no"})
    assert cfg.objective_settings == user_components.RankSettings(scale=0.5)
    summary = run_train(cfg)
    assert summary["finished"] and (tmp_path / "py" / "model" / "model.safetensors").is_file()
    row = json.loads((tmp_path / "py" / "metrics.jsonl").read_text().splitlines()[-1])
    assert row["rank_pg_rows"] == 4.0 and row["reward"] == pytest.approx(-row["train_misalignment"])


def test_bad_component_names_fail_with_one_line(tmp_path, capsys):
    from tokenalign.cli import main

    assert main(_args(tmp_path / "a", "objective=no_such_module:Thing")) == 2
    assert "cannot import module 'no_such_module'" in capsys.readouterr().err
    assert main(_args(tmp_path / "b", "objective=user_components:digit_share")) == 2
    assert "not a tokenalign.objectives.Objective subclass" in capsys.readouterr().err
    assert main(_args(tmp_path / "c", "scorer=user_components:nothing_here")) == 2
    assert "has no attribute 'nothing_here'" in capsys.readouterr().err
    assert main(_args(tmp_path / "d", "objective=reinfroce")) == 2
    assert "did you mean reinforce" in capsys.readouterr().err


def test_user_objective_signal_by_hand():
    import torch
    from user_components import RankPolicyGradient, RankSettings

    from tokenalign.policy.config import TrainConfig

    cfg = TrainConfig(objective=OBJECTIVE, samples_per_prompt=3, objective_settings=RankSettings(scale=2.0))
    objective = cfg.objective_class(cfg, cfg.objective_settings)
    assert isinstance(objective, RankPolicyGradient)

    class _Rollout:  # the signal reads only the scores
        scores = torch.tensor([3.0, 1.0, 2.0, 5.0, 5.0, 0.0])

    adv = objective.signal(_Rollout(), 0)["advantages"]
    # ranks within each prompt's 3 samples: (2, 0, 1) and (1.5, 1.5, 0) -> centred to [-1, 1], x2
    assert torch.allclose(adv, torch.tensor([2.0, -2.0, 0.0, 1.0, 1.0, -2.0]))


def test_every_component_kind_resolves_by_name_and_by_module_path():
    from tokenalign.editors import make_editor
    from tokenalign.editors.autopep8_editor import Autopep8Editor
    from tokenalign.errors import ConfigError
    from tokenalign.policy.rewards import REWARD_SOURCES, scorer_source
    from tokenalign.registry import Registry
    from tokenalign.scorers import CallableScorer, make_scorer
    from tokenalign.scorers.pep8 import Pep8Scorer
    from tokenalign.tasks import get_task

    assert isinstance(make_editor("autopep8"), Autopep8Editor)
    edited = make_editor("user_components:UpperCaseEditor").edit(["x = 1\n"])
    assert edited[0].edited == "X = 1\n" and edited[0].changed
    assert isinstance(make_scorer("pep8"), Pep8Scorer)
    scorer = make_scorer(SCORER)
    assert isinstance(scorer, CallableScorer) and scorer.score(["a1b2"], [""])[0].misalignment == 0.5
    assert get_task("pep8").name == "pep8"
    task = get_task("user_components:two_prompt_task")
    assert task.name == "two-prompts" and task.prompts("train") == ["def add(a, b):\n", "def greet(name):\n"]
    assert REWARD_SOURCES.get("scorer") is scorer_source
    assert REWARD_SOURCES.get("tokenalign.policy.rewards:scorer_source") is scorer_source
    with pytest.raises(ConfigError, match="unknown task 'pep9' \\(did you mean pep8\\?\\)"):
        get_task("pep9")
    with pytest.raises(ConfigError, match="neither a tokenalign.tasks.Task"):
        get_task("user_components:digit_share")
    registry = Registry("thing")
    registry.register("a")(int)
    with pytest.raises(ValueError, match="registered twice"):
        registry.register("a")(float)
    assert registry.names() == ["a"] and "a" in registry


def test_train_and_align_on_a_users_own_prompts(tmp_path):
    """Prompts from the user's own files (JSONL for training, CSV for evaluation) reach the
    policy, the guidance rounds and the held-out evaluation; the task's prompts do not."""
    from tokenalign.cli import main
    from tokenalign.config import from_dict
    from tokenalign.jobs.train import TrainConfig, build_trainer

    train = ["Write a haiku about rain.", "Name three prime numbers.", "Describe a cat in one line."]
    held_out = ["Say hello.", "Count to three."]
    (tmp_path / "train.jsonl").write_text("".join(json.dumps({"prompt": p}) + "\n" for p in train))
    (tmp_path / "eval.csv").write_text("prompt\n" + "".join(f'"{p}"\n' for p in held_out))
    cfg = from_dict(TrainConfig, {"prompts": str(tmp_path / "train.jsonl"), "eval_prompts": str(tmp_path / "eval.csv"),
                                  "objective": "rloo", "scorer": SCORER, "eval": {"prompts": 1}, "mixed_precision": "no"})
    trainer, _ = build_trainer(cfg)
    assert trainer.train_prompts == train
    out = tmp_path / "align"
    args = ["align", "--set", f"out_dir={out}", "--set", f"policy.prompts={tmp_path / 'train.jsonl'}",
            "--set", f"policy.eval_prompts={tmp_path / 'eval.csv'}", "--set", "policy.scorer=user_components:length_share",
            "--set", "policy.iterations=2", "--set", "policy.prompts_per_iteration=2", "--set", "policy.samples_per_prompt=2",
            "--set", "policy.sampling.max_new_tokens=12", "--set", "policy.eval.every=2", "--set", "policy.eval.prompts=2",
            "--set", "policy.eval.sampling.max_new_tokens=12", "--set", "policy.mixed_precision=no",
            "--set", "relearn_every=1", "--set", "guidance.prompts=3", "--set", "guidance.head.hidden_size=16"]
    assert main(args) == 0
    ranked = [json.loads(x) for x in (out / "rollout_lists.jsonl").read_text().splitlines()]
    assert ranked and all(row["prompt"] in train for row in ranked)  # every rollout ranked came from the file
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    # scored by the user's scorer: its metric, no pycodestyle keys
    assert rows[0]["iteration"] == 0 and "eval_mean_misalignment" in rows[0] and "eval_syntax_failure_rate" not in rows[0]
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert saved["policy"]["prompts"] == str(tmp_path / "train.jsonl")


def test_a_trl_reward_function_is_a_scorer(tmp_path):
    """A function with TRL's reward signature (prompts, completions, **kwargs) -> rewards
    works unchanged: the policy trains on its rewards, failures fail their sample only."""
    import math

    from user_components import brevity_reward

    from tokenalign.cli import main
    from tokenalign.scorers import RewardFunctionScorer, make_scorer

    scorer = make_scorer("user_components:brevity_reward")
    assert isinstance(scorer, RewardFunctionScorer)
    results = scorer.score(["ab", "abcd"], ["p", "q"])
    assert [r.misalignment for r in results] == [0.02, 0.04] and not any(r.failed for r in results)
    flaky = RewardFunctionScorer(lambda prompts, completions, **kw: [1.0, math.nan])
    assert [r.failed for r in flaky.score(["a", "b"])] == [False, True]
    broken = RewardFunctionScorer(lambda prompts, completions, **kw: [1.0])  # one reward for two completions
    assert all(r.failed and "returned 1 rewards" in r.failure for r in broken.score(["a", "b"]))
    out = tmp_path / "trl"
    assert main(_args(out, "objective=rloo", "scorer=user_components:brevity_reward", "eval.every=0")) == 0
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert all(r["reward"] < 0 and r["reward"] == pytest.approx(-r["train_misalignment"]) for r in rows)
    assert brevity_reward(["p"], ["x" * 50]) == [-0.5]
