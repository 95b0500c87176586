"""Distribution matching and the PHF objectives on the shared policy engine, end to end.

Tiny GPT-2s learn toy targets (a constraint on the first generated token; a corpus with
good and bad lines), a killed DPG run resumes exactly (Z estimate and offline proposal
included), conditional sampling never emits control tokens, and `tokenalign train` runs
each PHF objective and CDPG on the real pep8 task at smoke size.
"""

from __future__ import annotations

import json
import math

import pytest
import torch

from conftest import build_tiny_lm, fit_until_killed
from tokenalign.objectives.dm import DMSettings
from tokenalign.objectives.phf import PHFSettings
from tokenalign.policy.config import TrainConfig
from tokenalign.rollout.generate import SamplingSettings
from tokenalign.policy.rewards import RewardOutput
from tokenalign.policy.trainer import PolicyTrainer

PROMPTS = ["def add(a, b):\n", "x = ", "class Point:\n", "import os", "for i in", "print("]


class FirstTokenConstraint:
    """Score 0 (constraint satisfied) iff the first generated token is in a fixed tenth of
    the vocabulary, else -1."""

    def __init__(self, vocab_size: int) -> None:
        self.liked = set(range(3, vocab_size, 10))

    def __call__(self, samples):
        return RewardOutput([0.0 if s.generated_ids and s.generated_ids[0] in self.liked else -1.0 for s in samples])


def _dm_config(objective: str, **kw) -> TrainConfig:
    # Importance weights of whole sequences are noisy: short responses and 96 samples a step
    # (distribution matching is run with large batches; the reference uses 2048). No token
    # healing: the constraint is on the first token, which healing of the prompts' final
    # newline would restrict to tokens starting with "\n".
    base = dict(objective=objective, iterations=20, prompts_per_iteration=6, samples_per_prompt=16, lr=1e-2,
                mixed_precision="no", save_every=0, seed=0,
                sampling=SamplingSettings(max_new_tokens=2, batch_size=128, token_healing="off"))
    base.update(kw)
    return TrainConfig(**base)


def _dm_trainer(cfg, tok, out_dir=None, policy=None):
    policy = policy if policy is not None else build_tiny_lm(tok)
    return PolicyTrainer(cfg, policy, tok, FirstTokenConstraint(len(tok)), PROMPTS, ref_policy=build_tiny_lm(tok), out_dir=out_dir)


@pytest.mark.parametrize("objective,divergence", [("dpg", "kl"), ("cdpg", "kl"), ("fdpg", "js"), ("fdpg", "rkl")])
def test_distribution_matching_raises_constraint_satisfaction(tiny_tokenizer, objective, divergence):
    cfg = _dm_config(objective, objective_settings=DMSettings(target="constraint", divergence=divergence))
    rows = _dm_trainer(cfg, tiny_tokenizer).fit()
    first = sum(r["dm_constraint_satisfaction"] for r in rows[:3]) / 3
    last = sum(r["dm_constraint_satisfaction"] for r in rows[-3:]) / 3
    assert all(torch.isfinite(torch.tensor(r["dm_kl_p_pi"])) for r in rows)
    # Seeds of the sampler move the gain between ~0.3 and ~0.55 in 20 steps; no learning gives ~0.
    assert last > first + 0.3, (objective, divergence, first, last)


def test_offline_dpg_samples_from_the_proposal(tiny_tokenizer):
    cfg = _dm_config("dpg", iterations=1, objective_settings=DMSettings(offline=True))
    trainer = _dm_trainer(cfg, tiny_tokenizer)
    trainer.fit()  # one update: π moves away from q
    ro = trainer.rollout(trainer.iteration_prompts(1), seed=5)
    q = ro.extra["proposal_logprobs"]
    assert torch.allclose(q, ro.ref_logprobs, atol=1e-5)  # q is still the initial policy (= π0 here)
    assert (q - ro.logprobs).abs().max() > 1e-3


def test_moment_target_fits_lambda(tiny_tokenizer):
    cfg = _dm_config("dpg", iterations=1, objective_settings=DMSettings(target="moments", moments=[0.5], lambda_samples=96))
    trainer = _dm_trainer(cfg, tiny_tokenizer)
    trainer.fit()
    lam = float(trainer.objective.lambdas[0])
    assert lam > 0.5  # the base satisfies the constraint far less than half of the time


def test_killed_offline_dpg_run_resumes_exactly(tmp_path, tiny_tokenizer):
    cfg = _dm_config("dpg", iterations=4, save_every=1, objective_settings=DMSettings(offline=True, check_every=1))
    full = _dm_trainer(cfg, tiny_tokenizer, out_dir=tmp_path / "full")
    full.fit()
    part = _dm_trainer(cfg, tiny_tokenizer, out_dir=tmp_path / "part")

    fit_until_killed(lambda kill: part.fit(on_iteration=kill), at=2)
    from transformers import GPT2LMHeadModel

    ckpt = tmp_path / "part" / "checkpoint"
    resumed = _dm_trainer(cfg, tiny_tokenizer, out_dir=tmp_path / "part", policy=GPT2LMHeadModel.from_pretrained(ckpt / "policy").eval())
    resumed.fit(resume_from=ckpt)
    assert resumed.objective.z.value == pytest.approx(full.objective.z.value, rel=1e-9)
    for a, b in zip(full.unwrapped_policy.state_dict().values(), resumed.unwrapped_policy.state_dict().values()):
        assert torch.allclose(a, b, atol=1e-6)
    for a, b in zip(full.objective.proposal.state_dict().values(), resumed.objective.proposal.state_dict().values()):
        assert torch.allclose(a, b, atol=1e-6)


# ---- PHF ---------------------------------------------------------------------------------
GOOD, BAD = "x = 1\n", "x=1\n"


def _phf_trainer(objective: str, tok, **phf):
    from tokenalign.data.segments import Pep8SegmentScorer
    from tokenalign.objectives.phf_data import build_phf_documents
    from tokenalign.policy.value import ValueModel

    pytest.importorskip("pycodestyle")
    cfg = TrainConfig(objective=objective, iterations=30, prompts_per_iteration=8, lr=3e-3, mixed_precision="no",
                      save_every=0, seed=0, objective_settings=PHFSettings(max_tokens=32, **phf))
    policy = build_tiny_lm(tok)
    texts = [GOOD, BAD] * 8
    docs = build_phf_documents(texts, tok, Pep8SegmentScorer(), cfg.objective_settings, objective, seed=0)
    value = ValueModel(build_tiny_lm(tok, seed=1).transformer) if objective == "phf-awr" else None
    trainer = PolicyTrainer(cfg, policy, tok, FirstTokenConstraint(len(tok)), PROMPTS, ref_policy=build_tiny_lm(tok),
                            value_model=value, data=docs)
    return trainer, docs


def _doc_logprob(trainer, text: str) -> float:
    from tokenalign.rollout.batch import build_token_batch, token_logprobs
    from tokenalign.rollout.generate import encode_prompt

    tok = trainer.tokenizer
    ids = tok(text, add_special_tokens=False)["input_ids"]
    batch = build_token_batch([encode_prompt(tok, "")], [ids], tok.pad_token_id)
    with torch.no_grad():
        return float(token_logprobs(trainer.unwrapped_policy, batch)["logprobs"].sum())


@pytest.mark.parametrize("objective", ["phf-ul", "phf-rwr", "phf-awr"])
def test_score_aware_phf_objectives_prefer_the_clean_line(tiny_tokenizer, objective):
    """MLE on an even mix learns both lines; the score-aware objectives must end with the
    clean line more likely than the violating one (by a margin MLE does not give)."""
    mle, _ = _phf_trainer("phf-mle", tiny_tokenizer)
    mle.fit()
    trainer, _ = _phf_trainer(objective, tiny_tokenizer, awr_beta=0.01, rwr_beta=0.01)
    rows = trainer.fit()
    assert all(torch.isfinite(torch.tensor(r["loss"])) for r in rows)
    margin = _doc_logprob(trainer, GOOD) - _doc_logprob(trainer, BAD)
    mle_margin = _doc_logprob(mle, GOOD) - _doc_logprob(mle, BAD)
    assert margin > mle_margin + 0.5, (objective, margin, mle_margin)


def test_filtering_drops_the_violating_documents(tiny_tokenizer):
    _, docs = _phf_trainer("phf-filter", tiny_tokenizer)
    assert {d.text for d in docs} == {GOOD}


def test_conditional_documents_and_sampling(tiny_tokenizer):
    from tokenalign.objectives.conditioning import BAD_TOKEN, GOOD_TOKEN, Conditioning
    from tokenalign.objectives.phf_math import add_control_tokens
    from tokenalign.rollout.generate import SamplingConfig, generate

    import copy

    tok = copy.deepcopy(tiny_tokenizer)  # the session fixture must keep its vocabulary
    policy = build_tiny_lm(tok)
    good, bad = add_control_tokens(policy, tok, (GOOD_TOKEN, BAD_TOKEN))
    cond = Conditioning.from_tokenizer(tok)
    from tokenalign.data.segments import Pep8SegmentScorer
    from tokenalign.objectives.phf_data import build_phf_documents

    docs = build_phf_documents([GOOD + BAD], tok, Pep8SegmentScorer(), PHFSettings(drop_prob=0.0), "phf-cond", 0, (good, bad))
    assert docs[0].ids[0] == good and bad in docs[0].ids  # line 1 good, line 2 bad
    assert cond.strip(docs[0].ids) == tok(GOOD + BAD, add_special_tokens=False)["input_ids"]  # the LM's own tokens
    samples = generate(policy, tok, ["x = 1\n", ""] * 3, SamplingConfig(max_new_tokens=12, temperature=1.0, top_p=1.0, seed=0),
                       progress=False, conditioning=cond)
    for s in samples:
        assert len(s.completion_ids) <= 12  # control tokens do not eat the length budget
        assert good not in s.generated_ids and bad not in s.generated_ids
        assert GOOD_TOKEN not in s.completion and BAD_TOKEN not in s.completion
        seen_prompt, seen = s.conditioned_ids
        assert bad not in seen and bad not in seen_prompt  # <|bad|> is never generated
        assert seen_prompt[0] == good if s.prompt else seen_prompt[-1] == good
        assert cond.strip(seen) == s.generated_ids


# ---- the command, on the real task ------------------------------------------------------
def _args(out, *extra):
    base = ["train", "--set", f"out_dir={out}", "--set", "iterations=2", "--set", "prompts_per_iteration=4",
            "--set", "eval.every=2", "--set", "eval.prompts=2", "--set", "eval.sampling.max_new_tokens=16",
            "--set", "mixed_precision=no", "--set", "phf.documents=12", "--set", "phf.max_tokens=64"]
    return base + [x for kv in extra for x in ("--set", kv)]


@pytest.mark.slow
@pytest.mark.parametrize("objective", ["phf-filter", "phf-cond", "phf-awr"])  # the others differ only in the loss
def test_train_command_runs_phf_objectives(tmp_path, objective):
    pytest.importorskip("pycodestyle")
    from tokenalign.cli import main

    out = tmp_path / objective
    assert main(_args(out, f"objective={objective}")) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["finished"] and {"mean_misalignment", "kl_to_ref"} <= set(summary["after"])
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert all("kl" not in r for r in rows[1:])  # corpus batches have no rollout KL
    if objective == "phf-cond":
        from transformers import AutoTokenizer

        assert "<|good|>" in AutoTokenizer.from_pretrained(out / "model").get_vocab()
        # `tokenalign eval` samples a conditionally trained model from <|good|> by itself.
        assert main(["eval", "--model", str(out / "model"), "--set", f"out_dir={tmp_path / 'eval'}", "--set", "n_prompts=2",
                     "--set", "samples_per_prompt=2", "--set", "sampling.max_new_tokens=16"]) == 0
        metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
        assert metrics["conditioned"] is True and "kl_to_reference" in metrics
        assert "<|good|>" not in (tmp_path / "eval" / "samples.jsonl").read_text()


@pytest.mark.slow
def test_train_command_runs_cdpg(tmp_path):
    pytest.importorskip("pycodestyle")
    from tokenalign.cli import main

    out = tmp_path / "cdpg"
    assert main(_args(out, "objective=cdpg", "samples_per_prompt=2", "sampling.max_new_tokens=16")) == 0
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert {"dm_kl_p_pi", "dm_constraint_satisfaction", "dm_z", "dm_tv_p_pi"} <= set(rows[1])


def test_bad_dm_and_phf_configs_fail_clearly(tmp_path, capsys):
    from tokenalign.cli import main

    assert main(_args(tmp_path / "a", "objective=cdpg", "samples_per_prompt=1")) == 2
    assert "samples_per_prompt >= 2" in capsys.readouterr().err
    assert main(_args(tmp_path / "b", "objective=dpg", "sampling.temperature=0.7")) == 2
    assert "temperature 1" in capsys.readouterr().err
    assert main(_args(tmp_path / "c", "objective=phf-cond", "lora.enabled=true")) == 2
    assert "LoRA" in capsys.readouterr().err


def test_phf_corpus_file_errors_name_the_line(tmp_path, capsys):
    from tokenalign.cli import main

    bad = tmp_path / "corpus.jsonl"
    bad.write_text(json.dumps({"text": "x = 1\n"}) + "\n" + json.dumps({"txt": "y"}) + "\n")
    assert main(_args(tmp_path / "d", "objective=phf-mle", f"phf.corpus={bad}")) != 0
    err = capsys.readouterr().err
    assert "corpus.jsonl" in err and "2" in err and "text" in err



def test_conditioned_kl_uses_the_sampled_distribution(tiny_tokenizer):
    """The KL of a conditioned model is computed with the distribution it samples from:
    control and blocked tokens get no mass, so its log-probs are renormalised."""
    import copy

    from tokenalign.evaluate.policy_eval import sequence_kl
    from tokenalign.objectives.conditioning import BAD_TOKEN, GOOD_TOKEN, Conditioning
    from tokenalign.objectives.phf_math import add_control_tokens
    from tokenalign.rollout.batch import build_token_batch, token_logprobs
    from tokenalign.rollout.generate import SamplingConfig, generate

    tok = copy.deepcopy(tiny_tokenizer)
    policy = build_tiny_lm(tok)
    add_control_tokens(policy, tok, (GOOD_TOKEN, BAD_TOKEN))
    cond = Conditioning.from_tokenizer(tok)
    batch = build_token_batch([[5, 6]], [[7, 8, 9]], tok.pad_token_id)
    excluded = sorted(cond.suppressed_ids)
    with torch.no_grad():
        logits = policy(input_ids=batch.input_ids).logits[0, 1:-1].float()
        logits[:, excluded] = -torch.inf
        expected = torch.log_softmax(logits, -1).gather(-1, torch.tensor([[7], [8], [9]])).squeeze(-1)
        got = token_logprobs(policy, batch, exclude_ids=excluded)["logprobs"][0]
    assert torch.allclose(got, expected, atol=1e-6)
    assert (got > token_logprobs(policy, batch)["logprobs"][0]).all()  # renormalised: higher

    samples = generate(policy, tok, ["x = 1\n"] * 4, SamplingConfig(max_new_tokens=10, temperature=1.0, top_p=1.0, seed=1),
                       progress=False, conditioning=cond)
    ref = build_tiny_lm(tok)  # same weights as the policy before the new rows were added

    def ref_logprobs(b):
        return token_logprobs(ref, b)["logprobs"]

    kl = sequence_kl(policy, ref_logprobs, tok, samples, conditioning=cond)
    naive = sequence_kl(policy, ref_logprobs, tok, samples, conditioning=None)  # plain ids, full vocabulary
    assert math.isfinite(kl) and kl != naive


def test_fdpg_without_any_target_mass_takes_no_step(tiny_tokenizer):
    """No sample satisfied the constraint yet: Z = 0, log Z = -inf; no NaN, no update."""

    class NeverSatisfied:
        def __call__(self, samples):
            return RewardOutput([-1.0] * len(samples))

    cfg = _dm_config("fdpg", iterations=2, objective_settings=DMSettings(divergence="js"))
    policy = build_tiny_lm(tiny_tokenizer)
    before = {k: v.clone() for k, v in policy.state_dict().items()}
    trainer = PolicyTrainer(cfg, policy, tiny_tokenizer, NeverSatisfied(), PROMPTS, ref_policy=build_tiny_lm(tiny_tokenizer))
    rows = trainer.fit()
    assert all(r["dm_constraint_satisfaction"] == 0.0 for r in rows)
    for k, v in trainer.unwrapped_policy.state_dict().items():
        assert torch.equal(v, before[k]), k
