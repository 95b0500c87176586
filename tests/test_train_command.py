"""`tokenalign train` on the real pep8 task at smoke size: fine-grained PPO from a token
reward model, a stopped run resumes from its checkpoint, and bad configs fail clearly."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("pycodestyle")


@pytest.fixture(scope="module")
def token_model_dir(tmp_path_factory):
    from transformers import AutoTokenizer

    from tokenalign.rewards.model import TokenRewardHeadConfig, TokenRewardModel
    from tokenalign.tasks.pep8 import base_model_path

    path = tmp_path_factory.mktemp("rm") / "model"
    rm = TokenRewardModel.from_backbone(base_model_path(), TokenRewardHeadConfig(hidden_size=16, init_gain=1.0, bounding="centered_sigmoid"))
    rm.save_pretrained(path, tokenizer=AutoTokenizer.from_pretrained(base_model_path()))
    return path


def _args(out, *extra):
    base = ["train", "--set", f"out_dir={out}", "--set", "iterations=2", "--set", "prompts_per_iteration=2",
            "--set", "samples_per_prompt=2", "--set", "sampling.max_new_tokens=24", "--set", "eval.every=2",
            "--set", "eval.prompts=4", "--set", "eval.sampling.max_new_tokens=24", "--set", "mixed_precision=no",
            "--set", "ppo.epochs=1", "--set", "ppo.minibatch_size=2"]
    return base + [x for kv in extra for x in ("--set", kv)]


def test_fine_grained_ppo_stops_and_resumes(tmp_path, token_model_dir):
    from tokenalign.cli import main

    out = tmp_path / "fg"
    extra = ("objective=ppo", "reward.source=token_model", f"reward.token_model={token_model_dir}", "reward.placement=segment")
    assert main(_args(out, *extra, "stop_after_iterations=1")) == 0
    assert json.loads((out / "checkpoint" / "state.json").read_text())["iteration"] == 1
    assert not (out / "model").exists()
    assert main(_args(out, *extra)) == 0  # the same command again: resumes at iteration 1
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in rows] == [0, 1, 2]
    assert "token_reward" in rows[1] and "value_loss" in rows[1]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["finished"] and summary["samples_seen"] == 8
    assert {"mean_misalignment", "syntax_failure_rate", "kl_to_ref", "distinct_2"} <= set(summary["after"])
    assert (out / "model" / "model.safetensors").is_file() and (out / "checkpoint" / "value").is_dir()
    assert "Training curves" in (out / "report.html").read_text()


def test_bad_train_configs_fail_with_a_clear_message(tmp_path, capsys):
    from tokenalign.cli import main

    assert main(_args(tmp_path / "x", "reward.placement=token")) == 2
    assert "reward.source=blame, token_model or dpo" in capsys.readouterr().err
    assert main(_args(tmp_path / "y", "objective=rloo", "samples_per_prompt=1")) == 2
    assert "samples_per_prompt >= 2" in capsys.readouterr().err
    assert main(_args(tmp_path / "z", "objective=wmle", "reward.source=token_model", "reward.token_model=nowhere")) == 2
    assert "data=FILE" in capsys.readouterr().err


def test_weighted_mle_and_plain_mle_train_on_the_corpus_own_bodies(tmp_path, token_model_dir):
    """PG's supervised objective end to end: reference completions are the corpus's own
    function bodies for the training prompts; guidance weights w_t = r_t / Σ r from a token
    model, and the plain-MLE baseline w_t = 1 / L on the same rows."""
    import torch

    from tokenalign.cli import main
    from tokenalign.objectives.wmle import WeightedMLE
    from tokenalign.tasks.pep8.corpus import read_corpus
    from tokenalign.tasks.pep8.prompts import load_prompts, reference_completions

    train = set(load_prompts("train"))
    rows = [(h, b) for _, text in read_corpus("validation")[:40] for h, b in reference_completions(text) if h in train][:6]
    assert len(rows) == 6 and all(b.startswith("\n    ") and b.endswith("\n") for _, b in rows)
    data = tmp_path / "bodies.jsonl"
    data.write_text("".join(json.dumps({"prompt": h, "completion": b}) + "\n" for h, b in rows))
    for weights, extra in (("uniform", ()), ("guidance", ("reward.source=token_model", f"reward.token_model={token_model_dir}"))):
        out = tmp_path / weights
        assert main(_args(out, "objective=wmle", f"wmle.data={data}", f"wmle.weights={weights}", *extra)) == 0
        metrics = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
        assert [r["iteration"] for r in metrics] == [0, 1, 2] and all(torch.isfinite(torch.tensor(r["loss"])) for r in metrics[1:])
        assert (out / "model" / "model.safetensors").is_file()

    class Ro:  # the uniform signal by hand: each row's real tokens share weight 1
        class batch:
            response_mask = torch.tensor([[True, True, False, False], [True, True, True, True]])
    uniform = WeightedMLE.__new__(WeightedMLE)
    uniform.settings = type("S", (), {"weights": "uniform"})()
    assert uniform.signal(Ro, 0)["advantages"].tolist() == [[0.5, 0.5, 0.0, 0.0], [0.25] * 4]


def test_weighted_mle_rows_end_with_eos_unless_cut_at_the_limit():
    """A reference that fits ends with EOS (learned, as a finished sample's ending is); one
    longer than sampling.max_new_tokens is cut there and left unfinished."""
    import types

    from tokenalign.objectives.wmle import WeightedMLE
    from tokenalign.tasks.pep8 import load_tokenizer

    tok = load_tokenizer()
    rows = [("def f(a):", "\n    return a\n"), ("def g(b):", "\n    x = b\n" * 30)]
    trainer = types.SimpleNamespace(iteration_rows=lambda data, it: rows, tokenizer=tok, make_rollout=lambda samples: samples,
                                    data=rows)
    wmle = WeightedMLE.__new__(WeightedMLE)
    wmle.cfg = types.SimpleNamespace(sampling=types.SimpleNamespace(max_new_tokens=16))
    short, long = wmle.batch(trainer, 0)
    assert short.finished and short.generated_ids == short.completion_ids + [tok.eos_token_id]
    assert short.completion == "\n    return a\n"
    assert not long.finished and len(long.generated_ids) == len(long.completion_ids) == 16
