"""`tokenalign eval` on the shipped base model: metrics, win rate against itself, KL,
localization AUC with a token reward model, prompt files and their errors."""

from __future__ import annotations

import json
import math

import pytest

pytest.importorskip("pycodestyle")


def test_eval_base_model_against_itself(tmp_path):
    from tokenalign.cli import main
    from tokenalign.rewards.model import TokenRewardHeadConfig, TokenRewardModel
    from tokenalign.tasks.pep8 import base_model_path

    rm_dir = tmp_path / "rm"
    TokenRewardModel.from_backbone(base_model_path(), TokenRewardHeadConfig(hidden_size=8, init_gain=1.0)).save_pretrained(rm_dir)
    out = tmp_path / "eval"
    args = ["eval", "--quick", "--out", str(out), "--reward-model", str(rm_dir), "--set", "n_prompts=4",
            "--set", "samples_per_prompt=3", "--set", "sampling.max_new_tokens=32",
            "--set", "red_team.rounds=1", "--set", "red_team.candidates_per_round=4", "--set", "red_team.samples_per_prompt=1",
            "--set", "red_team.top_k=2", "--set", "red_team.red_sampling.max_new_tokens=24"]
    assert main(args) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert m["samples"] == 12 and m["prompts"] == 4
    # Same model, same prompts, same seeds: every comparison is a tie, and KL is 0.
    assert m["win_rate_vs_reference"] == 0.5
    assert m["reference_mean_misalignment"] == pytest.approx(m["mean_misalignment"])
    assert abs(m["kl_to_reference"]) < 1e-6
    assert "expected_max_misalignment_at_3" in m and m["expected_max_misalignment_at_3"] >= m["mean_misalignment"] - 1e-9
    assert 0.0 <= m["syntax_failure_rate"] <= 1.0 and 0.0 <= m["distinct_2"] <= 1.0
    assert 0.0 <= m["comment_line_share"] <= 1.0  # the pep8 scorer's text metric
    assert math.isnan(m["localization_auc"]) or 0.0 <= m["localization_auc"] <= 1.0
    assert len((out / "samples.jsonl").read_text().splitlines()) == 12
    assert "Metrics" in (out / "report.html").read_text() and "Red-teaming" in (out / "report.html").read_text()
    assert len(m["red_team_top2_by_round"]) == 2 and m["red_team_top2_by_round"][1] >= m["red_team_top2_by_round"][0]
    assert (out / "redteam.jsonl").is_file()


def test_eval_prompt_file_and_its_errors(tmp_path, capsys):
    from tokenalign.cli import main

    good = tmp_path / "prompts.jsonl"
    good.write_text('{"prompt": "def add(a, b):"}\n{"prompt": "def sub(a, b):"}\n')
    out = tmp_path / "eval"
    assert main(["eval", "--prompts", str(good), "--out", str(out), "--set", "samples_per_prompt=2",
                 "--set", "sampling.max_new_tokens=16", "--set", "reference=none"]) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert m["prompts"] == 2 and "win_rate_vs_reference" not in m
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "def f():"}\n{"text": "no prompt"}\n')
    assert main(["eval", "--prompts", str(bad), "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert "bad.jsonl" in err and ":2" in err and "prompt" in err


def test_red_teaming_grows_a_pool_of_valid_headers(tiny_tokenizer):
    from conftest import build_tiny_lm
    from tokenalign.evaluate.redteam import RedTeamSettings, extract_header, pool_weights, red_team

    assert extract_header("f(a, b):\n    return 1") == "def f(a, b):"
    assert extract_header("f(a, b)\n") is None and extract_header("f(:") is None
    w = pool_weights([0.0, 0.1, 0.2], 0.1)
    assert torch_allclose(w, [1 / (1 + math.e + math.e**2), math.e / (1 + math.e + math.e**2), math.e**2 / (1 + math.e + math.e**2)])

    calls = []

    def target(prompts, seed):  # a fake target: longer headers are "worse"
        calls.append(len(prompts))
        return [len(p) / 100 for p in prompts]

    seeds = ["def a(x):", "def bb(x, y):", "def ccc(x, y, z):", "def dddd():", "def e(self):"]
    settings = RedTeamSettings(rounds=2, candidates_per_round=8, top_k=3)
    settings.red_sampling.max_new_tokens = 8
    result = red_team(target, build_tiny_lm(tiny_tokenizer), tiny_tokenizer, seeds, settings)
    assert len(result.best_by_round) == 3 and result.valid_by_round[0] == 5
    assert all(b >= a for a, b in zip(result.best_by_round, result.best_by_round[1:]))  # the pool only grows
    assert result.best_by_round[0] == pytest.approx((17 + 13 + 12) / 300)
    assert calls[0] == 5 and sum(calls) == 5 + sum(result.valid_by_round[1:])
    assert all(extract_header(p[4:]) == p for p, _ in result.pool)


def torch_allclose(a, b):
    import torch

    return torch.allclose(a, torch.tensor(b, dtype=torch.float64))


def test_reference_samples_stand_in_for_sampling_the_reference(tmp_path):
    """An earlier evaluation of the reference model (same prompts, samples, settings, seed)
    gives the same reference metrics as sampling the reference again; any difference in
    what it sampled is a one-line error naming the field or the line."""
    import shutil

    from tokenalign.config import from_dict
    from tokenalign.errors import ConfigError
    from tokenalign.jobs.eval import EvalConfig, run_eval
    from tokenalign.tasks.pep8 import base_model_path

    base = str(base_model_path())
    other = tmp_path / "copy"  # the same weights in another folder: not the reference by name
    shutil.copytree(base, other)
    spec = {"n_prompts": 3, "samples_per_prompt": 2, "sampling": {"max_new_tokens": 24}, "seed": 3}

    def evaluate(name: str, **extra) -> dict:
        return run_eval(from_dict(EvalConfig, {**spec, "out_dir": str(tmp_path / name), **extra}))

    base_eval = evaluate("base")  # the reference is the model itself: not sampled twice
    assert base_eval["win_rate_vs_reference"] == 0.5 and base_eval["kl_to_reference"] == 0.0
    rows = (tmp_path / "base" / "generations.jsonl").read_text().splitlines()
    assert len(rows) == 6 and json.loads(rows[0])["generated_ids"]
    sampled = evaluate("sampled", model=str(other))
    reused = evaluate("reused", model=str(other), reference_samples=str(tmp_path / "base"))
    reference_keys = [k for k in sampled if k.startswith("reference_") or k == "win_rate_vs_reference"]
    assert len(reference_keys) > 5
    assert {k: reused[k] for k in reference_keys} == {k: sampled[k] for k in reference_keys}
    assert reused["reference_mean_misalignment"] == base_eval["mean_misalignment"]

    def error(**extra) -> str:
        with pytest.raises(ConfigError) as err:
            evaluate("bad", model=str(other), **extra)
        return str(err.value)

    assert "seed is 3, this run's is 4" in error(reference_samples=str(tmp_path / "base"), seed=4)
    assert "not the reference" in error(reference_samples=str(tmp_path / "sampled"))  # samples of the copy
    assert "samples_per_prompt" in error(reference_samples=str(tmp_path / "base"), samples_per_prompt=1)
    shutil.copytree(tmp_path / "base", tmp_path / "older")
    (tmp_path / "older" / "generations.jsonl").unlink()  # e.g. a folder of an older version
    assert "no generations.jsonl" in error(reference_samples=str(tmp_path / "older"))
    first = json.loads(rows[0])
    (tmp_path / "base" / "generations.jsonl").write_text(
        "\n".join([rows[0], json.dumps({**first, "prompt": first["prompt"] + " "}), *rows[2:]]) + "\n")
    assert "generations.jsonl:2: prompt differs" in error(reference_samples=str(tmp_path / "base"))
    (tmp_path / "base" / "generations.jsonl").write_text(
        "\n".join([rows[0], json.dumps({k: v for k, v in first.items() if k != "completion_ids"})]) + "\n")
    assert "generations.jsonl:2: not a sample" in error(reference_samples=str(tmp_path / "base"))
