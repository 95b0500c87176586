"""The policy engine end to end on a tiny GPT-2: every objective learns a toy reward,
a killed run resumes exactly, LoRA trains adapters only, and a 2-process run stays in sync."""

from __future__ import annotations

import pytest
import torch

from conftest import LikedTokens, build_tiny_lm, fit_until_killed
from tokenalign.objectives.ppo import PPOSettings
from tokenalign.objectives.reinforce import ReinforceSettings
from tokenalign.policy.config import TrainConfig
from tokenalign.rollout.generate import SamplingSettings
from tokenalign.policy.trainer import PolicyTrainer
from tokenalign.policy.value import ValueModel

PROMPTS = ["def add(a, b):\n", "x = ", "class Point:\n", "import os", "for i in", "print("]


def _config(objective: str, placement: str, **kw) -> TrainConfig:
    base = dict(objective=objective, iterations=16, prompts_per_iteration=6, samples_per_prompt=4, lr=1e-2, kl_coef=0.0,
                mixed_precision="no", save_every=0, sampling=SamplingSettings(max_new_tokens=8, batch_size=64),
                objective_settings=PPOSettings(epochs=2, minibatch_size=12), seed=0)
    base.update(kw)
    cfg = TrainConfig(**base)
    cfg.reward.placement = placement
    return cfg


def _trainer(cfg, tok, out_dir=None, policy=None, value=None):
    policy = policy if policy is not None else build_tiny_lm(tok)
    ref = build_tiny_lm(tok)
    if cfg.objective == "ppo" and value is None:
        value = ValueModel(build_tiny_lm(tok, seed=1).transformer)
    return PolicyTrainer(cfg, policy, tok, LikedTokens(len(tok)), PROMPTS, ref_policy=ref, value_model=value, out_dir=out_dir)


@pytest.mark.parametrize(
    "objective,placement",
    [("ppo", "token"), ("ppo", "sequence"), ("reinforce", "token"), ("rloo", "sequence")],
)
def test_each_objective_raises_the_toy_reward(tiny_tokenizer, objective, placement):
    trainer = _trainer(_config(objective, placement), tiny_tokenizer)
    rows = trainer.fit()
    first = sum(r["reward"] for r in rows[:3]) / 3
    last = sum(r["reward"] for r in rows[-3:]) / 3
    assert all(torch.isfinite(torch.tensor(r["loss"])) for r in rows)
    assert last > first + 0.2, (objective, placement, first, last)


def test_ppo_first_minibatch_is_on_policy(tiny_tokenizer):
    """Old log-probs are recomputed exactly by the first update: ratio 1, nothing clipped."""
    cfg = _config("ppo", "token", iterations=1, objective_settings=PPOSettings(epochs=1, minibatch_size=24))
    trainer = _trainer(cfg, tiny_tokenizer)
    ro = trainer.rollout(trainer.iteration_prompts(0), seed=0)
    stats = trainer.update(ro)
    assert stats["clip_fraction"] == 0.0 and stats["approx_kl_old"] < 1e-10


def test_kl_penalty_enters_the_rewards(tiny_tokenizer):
    cfg = _config("reinforce", "token", iterations=1, kl_coef=0.5)
    trainer = _trainer(cfg, tiny_tokenizer, policy=build_tiny_lm(tiny_tokenizer, seed=2))
    ro = trainer.rollout(trainer.iteration_prompts(0), seed=0)
    adv = trainer.advantages(ro)["advantages"]
    mask = ro.batch.response_mask
    expected = (ro.rewards - 0.5 * (ro.logprobs - ro.ref_logprobs)) * mask
    assert torch.allclose(adv, expected)
    assert (ro.logprobs - ro.ref_logprobs).abs().max() > 1e-3  # policy and reference differ (other init)


@pytest.mark.parametrize("precision", ["no", "bf16"])
def test_rollout_uses_the_samplers_logprobs_and_an_unchanged_policy_has_zero_kl(tiny_tokenizer, precision, monkeypatch):
    """The behaviour log-probs come from the sampler (no second policy forward) and equal a
    fresh forward pass (within 1e-4 in fp32; under bf16 autocast, which the policy samples
    with as it trains, within bf16 rounding), and a policy equal to its reference has KL 0."""
    import tokenalign.policy.trainer as trainer_module
    from tokenalign.rollout.batch import token_logprobs

    cfg = _config("rloo", "sequence", iterations=1, kl_coef=0.1, mixed_precision=precision)
    trainer = _trainer(cfg, tiny_tokenizer, policy=build_tiny_lm(tiny_tokenizer))  # same init as the reference
    scored = []
    monkeypatch.setattr(trainer_module, "token_logprobs", lambda model, *a, **k: scored.append(model) or token_logprobs(model, *a, **k))
    ro = trainer.rollout(trainer.iteration_prompts(0), seed=0)
    assert scored and all(m is trainer.ref_policy for m in scored)  # no forward pass of the policy after sampling
    mask = ro.batch.response_mask
    with torch.no_grad():
        fresh = token_logprobs(trainer.policy, ro.batch)["logprobs"]
    tol = 1e-4 if precision == "no" else 1e-2
    assert torch.allclose(ro.logprobs[mask], fresh[mask], atol=tol)
    assert (ro.logprobs - ro.ref_logprobs)[mask].abs().max() < tol


def test_killed_run_resumes_exactly(tmp_path, tiny_tokenizer):
    cfg = _config("ppo", "token", iterations=4, save_every=1)
    full = _trainer(cfg, tiny_tokenizer, out_dir=tmp_path / "full")
    full.fit()

    part = _trainer(cfg, tiny_tokenizer, out_dir=tmp_path / "part")

    fit_until_killed(lambda kill: part.fit(on_iteration=kill), at=2)
    ckpt = tmp_path / "part" / "checkpoint"
    from transformers import GPT2LMHeadModel

    resumed = _trainer(cfg, tiny_tokenizer, out_dir=tmp_path / "part", policy=GPT2LMHeadModel.from_pretrained(ckpt / "policy").eval(),
                       value=ValueModel.from_pretrained(ckpt / "value"))
    resumed.fit(resume_from=ckpt)
    assert resumed.iteration == full.iteration == 4
    for a, b in zip(full.unwrapped_policy.state_dict().values(), resumed.unwrapped_policy.state_dict().values()):
        assert torch.allclose(a, b, atol=1e-6)
    lines = (tmp_path / "part" / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 4  # iterations 1-2 before the kill, 3-4 after


def test_lora_trains_adapters_only_and_reference_is_the_base(tiny_tokenizer):
    from peft import LoraConfig, get_peft_model

    base = build_tiny_lm(tiny_tokenizer)
    before = {k: v.clone() for k, v in base.state_dict().items()}
    policy = get_peft_model(base, LoraConfig(task_type="CAUSAL_LM", r=4, lora_alpha=8, target_modules=["c_attn"]))
    cfg = _config("reinforce", "token", iterations=2, lr=1e-2)
    trainer = PolicyTrainer(cfg, policy, tiny_tokenizer, LikedTokens(len(tiny_tokenizer)), PROMPTS, ref_policy=None)
    trainer.fit()
    state = trainer.unwrapped_policy.state_dict()
    lora_b = [v for k, v in state.items() if "lora_B" in k]
    assert lora_b and any(v.abs().sum() > 0 for v in lora_b)  # B starts at 0: it moved
    checked = 0
    for name, v in state.items():  # the base weights did not
        orig = name.replace("base_model.model.", "").replace(".base_layer", "")
        if "lora_" not in name and orig in before:
            assert torch.equal(v, before[orig]), name
            checked += 1
    assert checked >= len(before) - 1  # (a tied LM head may appear once)
    ro = trainer.rollout(trainer.iteration_prompts(0), seed=1)
    assert (ro.logprobs - ro.ref_logprobs).abs().max() > 0  # reference = adapters off
    # The PEFT-wrapped policy is sampled by the pruned loop too, which records its log-probs:
    # they equal a fresh forward pass with the adapters on.
    from tokenalign.rollout.batch import token_logprobs
    from tokenalign.rollout.generate import _can_prune

    assert _can_prune(trainer.unwrapped_policy) and all(s.logprobs is not None for s in ro.samples)
    with torch.no_grad():
        fresh = token_logprobs(trainer.unwrapped_policy, ro.batch)["logprobs"]
    mask = ro.batch.response_mask
    assert torch.allclose(ro.logprobs[mask], fresh[mask], atol=1e-4)


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_value_lora_trains_adapters_and_head_only(tiny_tokenizer, tmp_path, arch):
    """PPO with a LoRA value model (the last layer adapted): its adapters and head move, its
    base weights stay bit for bit as loaded, and the optimizer holds only what trains."""
    from transformers import AutoTokenizer, LlamaForCausalLM

    from conftest import save_tiny_smollm2
    from tokenalign.utils.lora import LoraSettings, wrap_lora

    if arch == "gpt2":
        tok, policy, backbone = tiny_tokenizer, build_tiny_lm(tiny_tokenizer), build_tiny_lm(tiny_tokenizer, seed=1).transformer
    else:
        folder = save_tiny_smollm2(tmp_path / "llama")
        tok, policy, backbone = AutoTokenizer.from_pretrained(folder), LlamaForCausalLM.from_pretrained(folder), None
    settings = LoraSettings(enabled=True, r=4, alpha=8, layers=[1])
    value = ValueModel(backbone) if backbone is not None else ValueModel.from_backbone(tmp_path / "llama")
    before = {k: v.clone() for k, v in value.backbone.state_dict().items()}
    value.add_lora(settings)
    policy = wrap_lora(policy, settings, "CAUSAL_LM")
    cfg = _config("ppo", "token", iterations=2)
    trainer = PolicyTrainer(cfg, policy, tok, LikedTokens(len(tok)), PROMPTS, value_model=value)
    trainable = [p for p in value.parameters() if p.requires_grad]
    assert len(trainable) < len(list(value.parameters()))
    assert [id(p) for p in trainer.optimizer.param_groups[1]["params"]] == [id(p) for p in trainable]
    trainer.fit()
    assert value.head.weight.abs().sum() > 0  # the head starts at 0: it moved
    lora_b = [v for k, v in value.state_dict().items() if "lora_B" in k]
    assert lora_b and all(v.abs().sum() > 0 for v in lora_b)  # so did the adapters (B starts at 0)
    checked = 0
    for name, v in value.backbone.state_dict().items():  # the base weights did not
        if "lora_" not in name:
            assert torch.equal(v, before[name.replace("base_model.model.", "").replace(".base_layer", "")]), name
            checked += 1
    assert checked == len(before)


def test_two_process_cpu_run(tmp_path):
    """Two CPU processes (torchrun; accelerate reads its environment): DDP keeps the replicas equal.

    Launched as a fresh interpreter: forking a pytest process whose torch threads are
    already running can deadlock gloo. The job takes ~10 s; gloo on a loaded CPU has hung a
    rank about once in a dozen CI runs (never reproduced alone), so a run that hangs is
    retried once in a fresh folder; a job that fails, or hangs twice, fails the test."""
    import os
    import sys
    from pathlib import Path

    from conftest import run_retrying_a_hang

    job = Path(__file__).parent / "two_process_job.py"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parent), "OMP_NUM_THREADS": "1"}

    def command(attempt: int) -> list[str]:
        return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(job),
                str(tmp_path / f"attempt{attempt}")]

    done, attempt = run_retrying_a_hang(command, env, timeout=150)
    out = tmp_path / f"attempt{attempt}"
    assert done.returncode == 0, done.stderr[-3000:]
    assert (out / "rank0.ok").is_file() and (out / "rank1.ok").is_file()


def test_reinforce_mean_baseline_centres_the_signal(tiny_tokenizer):
    cfg = _config("reinforce", "token", iterations=1, objective_settings=ReinforceSettings(baseline="mean"))
    trainer = _trainer(cfg, tiny_tokenizer)
    ro = trainer.rollout(trainer.iteration_prompts(0), seed=0)
    adv = trainer.advantages(ro)["advantages"]
    mask = ro.batch.response_mask
    assert abs(float(adv[mask].mean())) < 1e-6
    assert torch.allclose(adv[mask], ro.rewards[mask] - ro.rewards[mask].mean(), atol=1e-6)
    trainer.objective.settings.baseline = "whiten"
    adv = trainer.advantages(ro)["advantages"]
    r = ro.rewards[mask]
    assert torch.allclose(adv[mask], (r - r.mean()) / r.std(), atol=1e-4)


@pytest.mark.parametrize("objective", ["reinforce", "rloo", "dpo"])
def test_update_in_chunks_gives_the_whole_batch_gradient(tiny_tokenizer, objective, tmp_path):
    """Gradient accumulation over chunks is weighted to equal one whole-batch step (dpo:
    chunks of whole pairs, the reference's log-probs computed once for the batch)."""
    from test_dpo import write_pairs
    from tokenalign.objectives.dpo import DPO, DPOSettings

    results = []
    for chunk in (0, 5):
        extra = {"objective_settings": DPOSettings(data=str(write_pairs(tmp_path / "pairs.jsonl")))} if objective == "dpo" else {}
        cfg = _config(objective, "token" if objective == "reinforce" else "sequence", iterations=1,
                      update_batch_size=chunk, entropy_coef=0.1, lr=1e-2, **extra)
        if objective == "dpo":
            policy = build_tiny_lm(tiny_tokenizer, seed=3)  # not its reference: the log-ratios are not zero
            trainer = PolicyTrainer(cfg, policy, tiny_tokenizer, LikedTokens(len(tiny_tokenizer)), PROMPTS,
                                    ref_policy=build_tiny_lm(tiny_tokenizer),
                                    data=DPO.training_data(cfg, None, tiny_tokenizer, policy))
            ro = trainer.objective.batch(trainer, 0)
            assert len(trainer.objective.update_steps(trainer, ro)[0]) == (1 if chunk == 0 else 3)  # 6 pairs, 2 a chunk
        else:
            trainer = _trainer(cfg, tiny_tokenizer)
            ro = trainer.rollout(trainer.iteration_prompts(0), seed=0)
        trainer.optimizer.step = lambda *a, **k: None  # keep the accumulated gradient to compare it
        trainer.optimizer.zero_grad = lambda *a, **k: None
        trainer.update(ro)
        results.append([p.grad.detach().clone() for p in trainer.unwrapped_policy.parameters()])
    assert any(g.abs().sum() > 0 for g in results[0])
    for a, b in zip(*results):
        assert torch.allclose(a, b, atol=1e-6, rtol=1e-4)


def test_save_model_writes_a_folder_eval_loads(tiny_tokenizer, tmp_path):
    from tokenalign.utils.models import load_causal_lm

    cfg = _config("reinforce", "token", iterations=1)
    trainer = _trainer(cfg, tiny_tokenizer)
    trainer.fit()
    path = trainer.save_model(tmp_path / "model")
    model, tokenizer = load_causal_lm(str(path))
    assert tokenizer.get_vocab() == tiny_tokenizer.get_vocab()
    for a, b in zip(model.state_dict().values(), trainer.unwrapped_policy.state_dict().values()):
        assert torch.equal(a, b)


def test_stop_kl_ends_the_run_evaluated_checkpointed_and_summarised(tiny_tokenizer, tmp_path):
    """stop_kl (FineGrainedRLHF's KL threshold): the policy starts away from its reference
    (another init), so every rollout's KL is over a tiny threshold; the run stops at the
    patience-th such iteration, evaluates and checkpoints there, finish_run writes the model
    and records why, and a trainer resumed from the checkpoint trains no further."""
    import json

    from transformers import GPT2LMHeadModel

    from tokenalign.errors import ConfigError
    from tokenalign.jobs.train import finish_run

    cfg = _config("ppo", "token", iterations=6, save_every=3, stop_kl=1e-3, stop_kl_patience=2)
    out = tmp_path / "run"
    trainer = _trainer(cfg, tiny_tokenizer, out_dir=out, policy=build_tiny_lm(tiny_tokenizer, seed=2))
    evaluated = []
    trainer.evaluate_fn = lambda t: evaluated.append(t.iteration) or {"mean_misalignment": 0.5, "failure_rate": 0.0}
    rows = trainer.fit()
    assert [r["iteration"] for r in rows] == [1, 2] and all(r["kl"] > 1e-3 for r in rows)
    assert trainer.done and trainer.stopped_early["iteration"] == 2 and "stop_kl" in trainer.stopped_early["reason"]
    assert evaluated == [2]  # the stopping iteration is evaluated like a last one (eval.every 10)
    state = json.loads((out / "checkpoint" / "state.json").read_text())  # checkpointed there though save_every is 3
    assert state["iteration"] == 2 and state["stopped_early"] == trainer.stopped_early
    summary = finish_run(trainer, cfg, out)
    assert summary["finished"] and summary["iteration"] == 2 and summary["stopped_early"]["iteration"] == 2
    assert summary["after"]["mean_misalignment"] == 0.5 and (out / "model" / "config.json").is_file()

    ckpt = out / "checkpoint"
    resumed = _trainer(cfg, tiny_tokenizer, out_dir=out, policy=GPT2LMHeadModel.from_pretrained(ckpt / "policy").eval(),
                       value=ValueModel.from_pretrained(ckpt / "value"))
    assert resumed.fit(resume_from=ckpt) == [] and resumed.iteration == 2 and resumed.done

    with pytest.raises(ConfigError, match="stop_kl"):
        _config("ppo", "token", stop_kl=-1.0).validate()
    with pytest.raises(ConfigError, match="stop_kl"):
        _config("dpo", "sequence", stop_kl=10.0).validate()
