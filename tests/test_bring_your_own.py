"""Bring your own model, prompts and preferences: `reward`, `train`, `align` and `eval` on a
tiny English chat model (not the pep8 task), from the CLI and from Python, with an English
prompts file, a chat-format dataset, a TRL reward function in a user module, a sequence
reward model as scorer and a human ranking file for `align`."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

from conftest import CHAT_TEMPLATE, save_tiny_chat_models

sys.path.insert(0, str(Path(__file__).parent / "plugins"))

ENGLISH = ["Write a haiku about rain.", "Name three prime numbers.", "Describe a cat in one line.", "Say hello.",
           "Count to three.", "Give me a word for happy.", "What colour is the sky?", "Name a fruit.",
           "Tell me a short joke.", "Describe the sea.", "Name a city.", "What is two plus two?"]
PAIRS = [{"prompt": p, "chosen": "Sure.", "rejected": "I will not answer that, it is far too long a question."} for p in ENGLISH]
FAST = ["iterations=2", "prompts_per_iteration=2", "samples_per_prompt=2", "sampling.max_new_tokens=10",
        "eval.prompts=2", "eval.samples_per_prompt=2", "eval.sampling.max_new_tokens=10", "mixed_precision=no"]


@pytest.fixture(scope="module")
def byo(tmp_path_factory):
    """A tiny GPT-2 with a chat template, a sequence reward model on it, and the user's data files."""
    root = save_tiny_chat_models(tmp_path_factory.mktemp("byo"))
    (root / "prompts.jsonl").write_text("".join(json.dumps({"prompt": p}) + "\n" for p in ENGLISH))
    chat = [{"prompt": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": p}]} for p in ENGLISH]
    (root / "chat.jsonl").write_text("".join(json.dumps(r) + "\n" for r in chat))
    (root / "pairs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in PAIRS))
    return root


def _cli(command: str, *settings: str, flags: tuple[str, ...] = ()) -> int:
    from tokenalign.cli import main

    return main([command, *flags, *[x for kv in settings for x in ("--set", kv)]])


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_cli_reward_train_align_eval_beyond_pep8(byo, tmp_path):
    # reward: a token reward model learned from the human pairs, on the user's model
    assert _cli("reward", f"out_dir={tmp_path / 'rm'}", f"backbone={byo / 'lm'}", f"data.train={byo / 'pairs.jsonl'}",
                "learn.epochs=1", "head.hidden_size=8", "learn.mixed_precision=no") == 0
    assert (tmp_path / "rm" / "model" / "tokenalign_reward.json").is_file()

    # train: English prompts file, a TRL reward function from the user's module
    out = tmp_path / "train"
    assert _cli("train", f"out_dir={out}", "task=text", f"model={byo / 'lm'}", f"prompts={byo / 'prompts.jsonl'}",
                "scorer=user_components:brevity_reward", "objective=rloo", "eval.every=2", *FAST) == 0
    rows = _rows(out / "metrics.jsonl")
    evals = [r for r in rows if "eval_mean_reward" in r]
    assert [r["iteration"] for r in evals] == [0, 2]
    assert not any(k.startswith("eval_") and ("syntax" in k or "misalignment" in k) for r in rows for k in r)
    train_rows = [r for r in rows if "reward" in r]
    assert all(r["reward"] <= 0 for r in train_rows)  # brevity: -len/100
    assert (out / "model" / "config.json").is_file() and (out / "model" / "tokenizer.json").is_file()

    # align: r_φ learns from the human ranking file (and the policy's samples ranked by the
    # sequence reward model, which also judges the held-out evaluation)
    out = tmp_path / "align"
    assert _cli("align", f"out_dir={out}", "policy.task=text", f"policy.model={byo / 'lm'}",
                f"policy.prompts={byo / 'chat.jsonl'}", f"policy.scorer={byo / 'seq-rm'}", f"guidance.data={byo / 'pairs.jsonl'}",
                "guidance.prompts=2", "relearn_every=1", "guidance.head.hidden_size=8", "policy.eval.every=2",
                *[f"policy.{kv}" for kv in FAST]) == 0
    rounds = _rows(out / "guidance.jsonl")
    assert rounds and all(r["lists"] >= len(PAIRS) for r in rounds)  # the human lists are in every round
    ranked = _rows(out / "rollout_lists.jsonl")
    assert ranked and all(r["prompt"].startswith("<|system|>Be brief.\n<|user|>") and r["prompt"].endswith("<|assistant|>")
                          for r in ranked)  # chat prompts rendered with the model's template
    assert "eval_mean_reward" in _rows(out / "metrics.jsonl")[0]

    # eval: the trained model on chat prompts, judged by the sequence reward model
    assert _cli("eval", "samples_per_prompt=2", "n_prompts=3", "sampling.max_new_tokens=8", "reference=none",
                flags=("--task", "text", "--model", str(tmp_path / "train" / "model"), "--prompts", str(byo / "chat.jsonl"),
                       "--scorer", str(byo / "seq-rm"), "--out", str(tmp_path / "eval"))) == 0
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert metrics["metric"] == "reward" and metrics["samples"] == 6 and "syntax_failure_rate" not in metrics
    assert "mean_reward" in metrics and "expected_min_reward_at_2" in metrics and "mean_misalignment" not in metrics
    # the same scores as the reward model itself gives the samples
    from tokenalign.rewards.model_scorers import load_scorer

    samples = _rows(tmp_path / "eval" / "samples.jsonl")
    direct = load_scorer(str(byo / "seq-rm")).rewards([s["completion"] for s in samples], [s["prompt"] for s in samples])
    assert metrics["mean_reward"] == pytest.approx(sum(direct) / len(direct), abs=1e-5)


def test_align_on_a_human_ranking_file_alone(byo, tmp_path):
    """No scorer at all: r_φ learns from the human file, the policy trains on its prompts."""
    out = tmp_path / "align"
    assert _cli("align", f"out_dir={out}", "policy.task=text", f"policy.model={byo / 'lm'}", f"guidance.data={byo / 'pairs.jsonl'}",
                "guidance.prompts=0", "guidance.head.hidden_size=8", "policy.eval.every=0",
                *[f"policy.{kv}" for kv in FAST if not kv.startswith("eval")]) == 0
    assert _rows(out / "guidance.jsonl")[0]["lists"] == len(PAIRS)
    assert json.loads((out / "summary.json").read_text())["finished"]
    # asking for ranked samples without anything to rank them is a one-line error
    from tokenalign.errors import ConfigError
    from tokenalign.config import from_dict
    from tokenalign.jobs.align import AlignConfig, run_align

    cfg = from_dict(AlignConfig, {"out_dir": str(tmp_path / "x"), "policy": {"task": "text", "model": str(byo / "lm")},
                                  "guidance": {"data": str(byo / "pairs.jsonl"), "prompts": 4}})
    with pytest.raises(ConfigError, match="no scorer to rank"):
        run_align(cfg)


def test_python_trainer_api(byo, tmp_path):
    """TRL's shape: model, objective, reward function, dataset in; a trained model out."""
    import datasets
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from user_components import brevity_reward

    from tokenalign import TrainConfig, Trainer

    chat = datasets.Dataset.from_list([{"prompt": [{"role": "user", "content": p}]} for p in ENGLISH])
    args = TrainConfig(task="text", out_dir=str(tmp_path / "run"), iterations=2, prompts_per_iteration=2,
                       samples_per_prompt=2, mixed_precision="no")
    args.sampling.max_new_tokens = 8
    args.eval.every, args.eval.samples_per_prompt = 2, 2
    args.eval.sampling.max_new_tokens = 8
    trainer = Trainer(model=str(byo / "lm"), objective="rloo", reward_funcs=brevity_reward, train_dataset=chat, args=args)
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    summary = trainer.train()
    assert summary["finished"] and "mean_reward" in summary["after"]
    # 12 prompts, min(eval.prompts, 12 // 5) = 2 held out of training
    assert len(trainer.policy_trainer.train_prompts) == 10
    assert all(p.startswith("<|user|>") and p.endswith("<|assistant|>") for p in trainer.policy_trainer.train_prompts)
    changed = any(not torch.equal(before[k], v) for k, v in trainer.model.state_dict().items())
    assert changed
    saved = trainer.save_model(tmp_path / "saved")
    reloaded = AutoModelForCausalLM.from_pretrained(saved)
    assert AutoTokenizer.from_pretrained(saved).chat_template == CHAT_TEMPLATE
    for k, v in reloaded.state_dict().items():
        assert torch.equal(v, trainer.model.state_dict()[k])


def test_several_reward_functions_are_summed_with_weights(byo, tmp_path):
    from user_components import brevity_reward, length_share

    from tokenalign.scorers import WeightedSum, as_scorer

    both = WeightedSum([as_scorer(brevity_reward), as_scorer(length_share)], [2.0, 0.5])
    [r] = both.score(["abcd"], ["p"])
    # brevity: reward -0.04 (x 2); length_share: misalignment 4/50, i.e. reward -0.08 (x 0.5)
    assert -r.misalignment == pytest.approx(2 * -0.04 + 0.5 * -0.08)


def test_dense_reward_functions_land_on_their_tokens(byo):
    """A reward function's per-token rewards land on the policy's tokens as they are; its
    blamed spans take its reward on the tokens that hold them (reward.source: blame)."""
    from user_components import digit_blame_reward, token_brevity_reward

    from tokenalign.policy.rewards import BlameReward
    from tokenalign.rollout.generate import Sample
    from tokenalign.scorers import as_scorer
    from tokenalign.utils.models import load_tokenizer

    tok = load_tokenizer(str(byo / "lm"))
    text = "ab 7 cd"
    ids = tok(text, add_special_tokens=False)["input_ids"]
    sample = Sample("p", text, ids, True, ids, [1])
    dense = BlameReward(as_scorer(token_brevity_reward), scale=2.0, tokenizer=tok)([sample])
    assert dense.token_rewards[0] == pytest.approx([-0.02] * len(ids))
    assert dense.scores[0] == pytest.approx(-0.02 * len(ids))
    blamed = BlameReward(as_scorer(digit_blame_reward), tokenizer=tok)([sample])
    row = blamed.token_rewards[0]
    holder = next(i for i, t in enumerate(ids) if "7" in tok.decode(ids[: i + 1])[len(tok.decode(ids[:i])):])
    assert row[holder] == pytest.approx(-1.0) and sum(row) == pytest.approx(-1.0)
    # a wrong number of token rewards fails that sample only, with a reason
    wrong = as_scorer(lambda prompts, completions, **kw: [[0.0]] * len(completions))
    [res] = wrong.score([text], ["p"], completion_ids=[ids])
    assert res.failed and "token rewards for" in res.failure


def test_prompt_sources_and_errors(byo, tmp_path):
    import datasets

    from tokenalign.data import load_prompts
    from tokenalign.data.prompts import render_prompts, train_and_eval_prompts
    from tokenalign.errors import ConfigError, DataError
    from tokenalign.rewards.model_scorers import load_scorer
    from tokenalign.utils.models import load_tokenizer

    tok = load_tokenizer(str(byo / "lm"))
    from_file = load_prompts(byo / "chat.jsonl")
    from_memory = load_prompts(datasets.Dataset.from_list([json.loads(x) for x in (byo / "chat.jsonl").read_text().splitlines()]))
    assert from_file == from_memory and render_prompts(from_file[:1], tok)[0] == (
        "<|system|>Be brief.\n<|user|>Write a haiku about rain.\n<|assistant|>")
    assert load_prompts(["a", "b"]) == ["a", "b"]
    # a saved dataset with a test split: held-out prompts come from it
    datasets.DatasetDict({"train": datasets.Dataset.from_list([{"prompt": p} for p in ENGLISH[:8]]),
                          "test": datasets.Dataset.from_list([{"prompt": p} for p in ENGLISH[8:]])}).save_to_disk(tmp_path / "ds")
    train, held = train_and_eval_prompts(str(tmp_path / "ds"), n_eval=3)
    assert train == ENGLISH[:8] and held == ENGLISH[8:11]
    # a file without one: a seeded share held out, never trained on
    train, held = train_and_eval_prompts(str(byo / "prompts.jsonl"), n_eval=64, seed=1)
    assert len(held) == 2 and not set(held) & set(train) and sorted(train + held) == sorted(ENGLISH)
    with pytest.raises(ConfigError, match="too few to hold any out"):
        train_and_eval_prompts(["a", "b"])
    tok.chat_template = None
    with pytest.raises(ConfigError, match="has no chat template"):
        render_prompts(from_file, tok, "my-model")
    with pytest.raises(DataError, match=r"item 0: field 'prompt': message 0: 'role' must be a string"):
        load_prompts([{"prompt": [{"content": "hi"}]}])
    with pytest.raises(ConfigError, match="scorer folder './nowhere' does not exist"):
        load_scorer("./nowhere")


def test_the_readme_python_example_runs(byo, tmp_path, monkeypatch):
    """The README's Python example, as written, on the tiny model in place of the hub id."""
    import re

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = readme[readme.index("### Bring your own model"):]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    assert "HuggingFaceTB/SmolLM2-135M-Instruct" in code and "iterations=20" in code
    code = code.replace("HuggingFaceTB/SmolLM2-135M-Instruct", str(byo / "lm")).replace("iterations=20", "iterations=1")
    monkeypatch.chdir(tmp_path)
    exec(compile(code, "README.md", "exec"), {})
    assert (tmp_path / "runs" / "api" / "model" / "config.json").is_file()
    assert json.loads((tmp_path / "runs" / "api" / "summary.json").read_text())["finished"]


def test_reward_align_eval_from_python(byo, tmp_path):
    """The jobs behind the commands, called from Python with Python objects."""
    import datasets
    from user_components import brevity_reward

    from tokenalign.config import from_dict
    from tokenalign.jobs.align import AlignConfig, run_align
    from tokenalign.jobs.eval import EvalConfig, run_eval
    from tokenalign.jobs.reward import RewardRunConfig, run_reward

    final = run_reward(from_dict(RewardRunConfig, {
        "out_dir": str(tmp_path / "rm"), "backbone": str(byo / "lm"), "data": {"train": str(byo / "pairs.jsonl")},
        "learn": {"epochs": 1, "mixed_precision": "no"}, "head": {"hidden_size": 8}}))
    assert "eval_ranking_accuracy" in final
    # a token reward model folder is a scorer: the reward-learning run's model judges an eval
    chat = datasets.Dataset.from_list([{"prompt": [{"role": "user", "content": p}]} for p in ENGLISH[:3]])
    metrics = run_eval(from_dict(EvalConfig, {"task": "text", "model": str(byo / "lm"), "scorer": str(tmp_path / "rm" / "model"),
                                              "out_dir": str(tmp_path / "eval"), "samples_per_prompt": 2, "reference": "none",
                                              "sampling": {"max_new_tokens": 8}}), prompts=chat)
    assert metrics["metric"] == "reward" and metrics["prompts"] == 3
    # its sequence reward is the average of its token rewards (the aggregate it was trained on)
    from tokenalign.rewards.model import TokenRewardModel
    from tokenalign.rewards.model_scorers import load_scorer
    from tokenalign.rewards.scoring import score_tokens
    from tokenalign.utils.models import load_tokenizer

    rm_dir = tmp_path / "rm" / "model"
    assert TokenRewardModel.from_pretrained(rm_dir).sequence_aggregate == ("avg", 2.0)
    [tr] = score_tokens(TokenRewardModel.from_pretrained(rm_dir), load_tokenizer(str(rm_dir)), ["Say hi."], [" Hello there."])
    [res] = load_scorer(str(rm_dir)).score([" Hello there."], ["Say hi."])
    assert -res.misalignment == pytest.approx(sum(tr.rewards) / len(tr.rewards), abs=1e-6)
    # a reward function object in place of the config's name
    metrics = run_eval(from_dict(EvalConfig, {"task": "text", "model": str(byo / "lm"), "out_dir": str(tmp_path / "eval2"),
                                              "samples_per_prompt": 2, "reference": "none", "sampling": {"max_new_tokens": 8}}),
                       prompts=ENGLISH[:2], scorer=brevity_reward)
    samples = _rows(tmp_path / "eval2" / "samples.jsonl")
    assert metrics["mean_reward"] == pytest.approx(sum(-len(s["completion"]) / 100 for s in samples) / len(samples))
    summary = run_align(from_dict(AlignConfig, {
        "out_dir": str(tmp_path / "align"), "relearn_every": 1,
        "policy": {"task": "text", "model": str(byo / "lm"), "prompts": str(byo / "prompts.jsonl"),
                   "scorer": "user_components:brevity_reward", "iterations": 2, "prompts_per_iteration": 2,
                   "samples_per_prompt": 2, "mixed_precision": "no", "eval": {"every": 0}, "sampling": {"max_new_tokens": 8}},
        "guidance": {"data": str(byo / "pairs.jsonl"), "prompts": 2, "head": {"hidden_size": 8}}}))
    assert summary["finished"] and summary["guidance_heldout_pairs"] >= 0


def test_align_reads_human_edits_as_pairs(tmp_path):
    from tokenalign.jobs.align import GuidanceSettings, _human_lists

    rows = [{"prompt": "Say hi.", "original": "HELLO!!!", "edited": "Hello!"},
            {"prompt": "Name a fruit.", "original": "Apple.", "edited": "Apple."}]  # no edit: no preference
    (tmp_path / "edits.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    [ex] = _human_lists(GuidanceSettings(data=str(tmp_path / "edits.jsonl"), data_format="edits"))
    assert ex.responses == ("Hello!", "HELLO!!!") and ex.scores == (1.0, 0.0)
