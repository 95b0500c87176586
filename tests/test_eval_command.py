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
            "--set", "samples_per_prompt=3", "--set", "sampling.max_new_tokens=32"]
    assert main(args) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert m["samples"] == 12 and m["prompts"] == 4
    # Same model, same prompts, same seeds: every comparison is a tie, and KL is 0.
    assert m["win_rate_vs_reference"] == 0.5
    assert m["reference_mean_misalignment"] == pytest.approx(m["mean_misalignment"])
    assert abs(m["kl_to_reference"]) < 1e-6
    assert "expected_max_misalignment_at_3" in m and m["expected_max_misalignment_at_3"] >= m["mean_misalignment"] - 1e-9
    assert 0.0 <= m["syntax_failure_rate"] <= 1.0 and 0.0 <= m["distinct_2"] <= 1.0
    assert math.isnan(m["localization_auc"]) or 0.0 <= m["localization_auc"] <= 1.0
    assert len((out / "samples.jsonl").read_text().splitlines()) == 12
    assert "Metrics" in (out / "report.html").read_text()


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
