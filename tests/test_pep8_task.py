"""The pep8 task: corpus split, prompts, the shipped base model, pretraining resume, demo."""

from __future__ import annotations

import json

import pytest
import torch

from tokenalign.tasks.pep8 import base_model_path, complete_lines
from tokenalign.tasks.pep8.corpus import corpus_files, split_of
from tokenalign.tasks.pep8.prompts import extract_headers, load_prompts


def test_split_is_deterministic_disjoint_and_excludes_tests():
    assert split_of("ast.py") == split_of("ast.py")
    files = {s: {rel for rel, _ in corpus_files(s)} for s in ("train", "validation", "test")}
    assert files["train"] and files["validation"] and files["test"]
    assert not (files["train"] & files["test"]) and not (files["train"] & files["validation"])
    everything = set().union(*files.values())
    assert not any("/test/" in f"/{rel}" or "/tests/" in f"/{rel}" or "idle_test" in rel for rel in everything)
    assert all(split_of(rel) == s for s, rels in files.items() for rel in rels)


def test_extract_headers():
    source = 'class A:\n    def m(self, x):\n        """Doc."""\n        return x\n\ndef f(a,\n      b):\n    return a\n'
    assert extract_headers(source) == ['def m(self, x):\n    """Doc."""', "def f(a,\n      b):"]


def test_shipped_prompts_are_function_headers():
    test, train = load_prompts("test"), load_prompts("train")
    assert len(test) == 500 and len(train) > 300 and len(set(test)) == len(test)
    for p in test[:100]:
        assert p.startswith(("def ", "async def ")) and not p.endswith("\n")
        compile(p + "\n    pass\n", "<prompt>", "exec")


def test_complete_lines_only_trims_length_cut_samples():
    assert complete_lines("    x = 1\n    y = (", finished=False) == "    x = 1\n"
    assert complete_lines("    x = 1\n    y = (", finished=True) == "    x = 1\n    y = ("


@pytest.fixture(scope="module")
def base():
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = base_model_path()
    return AutoModelForCausalLM.from_pretrained(path).eval(), AutoTokenizer.from_pretrained(path)


def test_shipped_model_loads_offline_and_samples(base):
    from tokenalign.rollout.generate import SamplingConfig, generate

    model, tok = base
    info = json.loads((base_model_path() / "training.json").read_text())
    assert info["parameters"] == sum(p.numel() for p in model.parameters())
    size = sum(f.stat().st_size for f in base_model_path().glob("*.safetensors"))
    assert size < 21 * 2**20
    samples = generate(model, tok, ["def add(a, b):\n"] * 2, SamplingConfig(max_new_tokens=16, seed=0), progress=False)
    assert all(s.completion_ids for s in samples)


def test_shipped_tokenizer_round_trips_code(base):
    _, tok = base
    code = "def f(x):\n        return {'é': x}  # 東京\n\tpass\n"
    assert tok.decode(tok(code)["input_ids"]) == code
    assert len(tok("            return x\n")["input_ids"]) <= 4  # indentation runs are single tokens


def test_pretrain_resumes_exactly(tmp_path):
    from tokenalign.tasks.pep8.pretrain import PretrainConfig, pretrain
    from transformers import AutoModelForCausalLM

    tiny = dict(vocab_size=300, n_layer=1, n_embd=32, n_head=2, block_size=32, batch_size=4, steps=4, warmup_steps=1,
                eval_every=2, eval_blocks=4, save_every=100, max_train_files=3, mixed_precision="no")
    full = pretrain(PretrainConfig(out_dir=str(tmp_path / "full"), **tiny))
    part_cfg = PretrainConfig(out_dir=str(tmp_path / "part"), stop_after_steps=2, **tiny)
    assert pretrain(part_cfg).name == "checkpoint"
    resumed = pretrain(PretrainConfig(out_dir=str(tmp_path / "part"), **tiny))
    a = AutoModelForCausalLM.from_pretrained(full).state_dict()
    b = AutoModelForCausalLM.from_pretrained(resumed).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    rows = [json.loads(l) for l in (tmp_path / "part" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3, 4]


def test_demo_quick_writes_a_report(tmp_path):
    from tokenalign.cli import main

    assert main(["demo", "--quick", "--out", str(tmp_path / "demo"), "--set", "align.method=token"]) == 0
    out = tmp_path / "demo"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["samples"] == 10 and "prompted_mean_misalignment" in summary
    report = (out / "report.html").read_text()
    assert "Gold blame" in report and "hm-tok" in report
    # the alignment stage: before/after on the same prompts, an aligned model on disk
    assert "Alignment: token-level REINFORCE on pycodestyle" in report and "Held-out prompts, before vs after" in report
    assert summary["align_before"]["n"] == summary["align_after"]["n"] == 8
    assert 0.0 <= summary["align_after"]["comment_line_share"] <= 1.0 and "comment_line_share" in report
    assert (out / "align" / "model" / "model.safetensors").is_file()
    for line in (out / "ranked.jsonl").read_text().splitlines():
        row = json.loads(line)
        assert len(row["responses"]) == len(row["scores"]) >= 2


def test_pep8_references_are_the_training_prompts_own_bodies():
    """wmle's supervised data: each training prompt's own body in the corpus, and header +
    body is the function as written (it compiles)."""
    import ast

    from tokenalign.tasks import get_task

    task = get_task("pep8")
    rows = task.references()
    train = set(task.prompts("train"))
    assert len(rows) == 616 and len({p for p, _ in rows}) == len(rows)
    assert all(p in train for p, _ in rows)
    for prompt, body in rows:
        assert body.startswith("\n") and body.endswith("\n")
        ast.parse(prompt + body)


def test_demo_quick_wmle_weights_reference_bodies_by_the_guidance(tmp_path):
    """The demo's wmle: r_φ learned from rankings of the policy's samples weighs the tokens of
    the task's reference bodies; nothing ranks its batches (they are not the policy's samples)."""
    from tokenalign.cli import main
    from tokenalign.errors import ConfigError
    from tokenalign.jobs.demo_align import DemoAlign, align_config, write_references
    from tokenalign.tasks import get_task

    cfg = align_config(DemoAlign(method="wmle"), tmp_path / "x", "", 4, 48, 0, True, references=tmp_path / "r.jsonl")
    assert cfg.policy.objective == "wmle" and cfg.policy.objective_settings.data == str(tmp_path / "r.jsonl")
    assert cfg.policy.objective_settings.weights == "guidance" and cfg.policy.reward.normalize == "none"
    assert cfg.policy.iterations == DemoAlign().wmle_iterations == 40 and cfg.relearn_every == 10
    assert not cfg.guidance.reuse_rollouts and not cfg.guidance.head.end_token
    with pytest.raises(ConfigError, match="task 'text' has none"):
        write_references(get_task("text"), tmp_path / "none.jsonl")

    assert DemoAlign().method == "wmle"  # the demo's default
    assert main(["demo", "--quick", "--out", str(tmp_path / "demo")]) == 0
    out = tmp_path / "demo"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["align_before"]["n"] == summary["align_after"]["n"] == 8 and summary["align_iterations"] == 2
    references = [json.loads(x) for x in (out / "references.jsonl").read_text().splitlines()]
    assert len(references) == 616
    report = (out / "report.html").read_text()
    assert "Alignment: guidance-weighted MLE on reference completions" in report and "What the learned guidance" in report
    rows = [json.loads(x) for x in (out / "align" / "metrics.jsonl").read_text().splitlines()]
    trained = [r for r in rows if "loss" in r]
    assert trained and all("kl" not in r for r in trained)  # a dataset's batch: no rollout KL
    assert not (out / "align" / "rollout_lists.jsonl").exists()
    assert sorted(p.name for p in (out / "align" / "guidance").glob("round-*")) == ["round-00000", "round-00001"]


def test_demo_quick_pg_loop_trains_on_token_guidance(tmp_path):
    """The demo's PG loop: r_φ's rewards on the tokens (not sequence-placed, as a config bug
    once made them), its settings and held-out ranking accuracy in the report."""
    from tokenalign.cli import main
    from tokenalign.config import from_dict
    from tokenalign.jobs.demo_align import DemoAlign, align_config
    from tokenalign.jobs.align import AlignConfig

    acfg = align_config(DemoAlign(method="pg"), tmp_path / "x", "", 4, 48, 0, True)
    assert acfg.policy.reward.source == "guidance" and acfg.policy.reward.placement == "token"
    assert acfg.policy.kl_coef == DemoAlign().pg_kl_coef and acfg.policy.reward.normalize == "sequence"
    assert acfg.guidance.reuse_rollouts and acfg.guidance.head.end_token and acfg.policy.objective_settings.reward_to_go
    assert align_config(DemoAlign(method="rloo"), tmp_path / "x", "", 4, 48, 0, True).policy.kl_coef == DemoAlign().kl_coef
    # its equal-information baseline: a sequence reward model from the same rankings, same optimiser and KL
    seq = align_config(DemoAlign(method="pg-sequence"), tmp_path / "x", "", 4, 48, 0, True)
    assert seq.guidance.learn.aggregator == "last" and seq.policy.reward.placement == "sequence"
    assert seq.policy.reward.aggregate == "last" and seq.policy.kl_coef == acfg.policy.kl_coef
    assert seq.policy.reward.normalize == acfg.policy.reward.normalize  # unit-scale sample totals in both arms
    assert seq.policy.objective_settings == acfg.policy.objective_settings and seq.guidance.prompts == acfg.guidance.prompts
    saved = from_dict(AlignConfig, {"policy": {"iterations": 2}})  # a section in part keeps PG's defaults
    assert saved.policy.reward.placement == "token"

    assert main(["demo", "--quick", "--out", str(tmp_path / "demo"), "--set", "align.method=pg"]) == 0
    out = tmp_path / "demo"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["align_before"]["n"] == summary["align_after"]["n"] == 8
    assert "align_guidance_heldout_accuracy" in summary
    report = (out / "report.html").read_text()
    assert "Alignment: a short PG loop" in report and "What the learned guidance" in report
    assert "scores never reach the policy" in report
    assert (out / "align" / "rollout_lists.jsonl").is_file() and (out / "align" / "model" / "model.safetensors").is_file()
