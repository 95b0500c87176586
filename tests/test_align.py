"""The alternating loop (SPEC 1.5) on the real pep8 task at smoke size: guidance rounds
happen on schedule, each r_φ is saved, and the policy trains against it."""

from __future__ import annotations

import importlib.util
import json

import pytest

pytest.importorskip("pycodestyle")


def test_align_loop_smoke(tmp_path):
    from tokenalign.config import from_dict
    from tokenalign.jobs.align import AlignConfig, run_align

    tensorboard = importlib.util.find_spec("tensorboard") is not None  # the trackers' check rides along when installed
    cfg = from_dict(AlignConfig, {
        "out_dir": str(tmp_path / "align"),
        "relearn_every": 2,
        "policy": {"iterations": 4, "prompts_per_iteration": 2, "samples_per_prompt": 3, "mixed_precision": "no",
                   "sampling": {"max_new_tokens": 24}, "eval": {"every": 4, "prompts": 4, "sampling": {"max_new_tokens": 24}},
                   "report_to": "tensorboard" if tensorboard else "none"},
        "guidance": {"prompts": 6, "head": {"hidden_size": 32}, "learn": {"epochs": 1, "batch_size": 4, "mixed_precision": "no"}},
    })
    summary = run_align(cfg)
    out = tmp_path / "align"
    assert summary["finished"] and summary["iteration"] == 4
    rounds = sorted(p.name for p in (out / "guidance").iterdir())
    assert rounds == ["round-00000", "round-00002"]  # relearn_until defaults to half the run
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in rows] == [0, 1, 2, 3, 4]
    assert all("token_reward" in r for r in rows[1:])
    assert "eval_mean_misalignment" in rows[-1] and "eval_kl_to_ref" in rows[-1]
    assert (out / "model" / "model.safetensors").is_file() and (out / "report.html").is_file()
    guidance = [json.loads(x) for x in (out / "guidance.jsonl").read_text().splitlines()]
    assert [g["iteration"] for g in guidance] == [0, 2]
    # r_φ's ranking accuracy on rollouts it never trained on (nan when no strict pair)
    lists = [json.loads(x) for x in (out / "rollout_lists.jsonl").read_text().splitlines()]
    assert all(0 <= r["iteration"] < 4 and len(r["guidance_scores"]) == len(r["responses"]) for r in lists)
    assert summary["guidance_heldout_pairs"] >= (1 if lists else 0)
    assert "previous_heldout_accuracy" in guidance[1]
    if tensorboard:  # the guidance rounds log to the policy run's trackers, under guidance/
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

        events = EventAccumulator(str(out / "tensorboard" / "tokenalign"))
        events.Reload()
        assert [e.step for e in events.Scalars("guidance/lists")] == [0, 2]
        assert [e.step for e in events.Scalars("reward")] == [1, 2, 3, 4]


def test_reuse_rollouts_needs_an_objective_that_samples_the_policy():
    """wmle's batches are a dataset's rows, not K samples of the policy: nothing to re-rank."""
    import pytest

    from tokenalign.config import from_dict
    from tokenalign.errors import ConfigError
    from tokenalign.jobs.align import AlignConfig

    policy = {"objective": "wmle", "wmle": {"data": "rows.jsonl"}, "reward": {"normalize": "none"}}
    assert not from_dict(AlignConfig, {"policy": policy}).guidance.reuse_rollouts
    with pytest.raises(ConfigError, match="guidance.reuse_rollouts: objective wmle trains on a dataset"):
        from_dict(AlignConfig, {"policy": policy, "guidance": {"reuse_rollouts": True}})


def test_guidance_with_lora_keeps_the_backbone_and_learns_adapters_and_head(tmp_path):
    """guidance.lora: every round's r_φ has the base model's own backbone weights; only the
    adapters and the head learn, in the second round too (the trainable set survives the
    freeze between rounds)."""
    pytest.importorskip("peft")
    import torch
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    from tokenalign.config import from_dict
    from tokenalign.jobs.align import AlignConfig, run_align
    from tokenalign.tasks import get_task
    from tokenalign.utils.lora import last_layers_lora

    base = get_task("pep8").model_path()
    cfg = from_dict(AlignConfig, {
        "out_dir": str(tmp_path / "align"), "relearn_every": 2,
        "policy": {"iterations": 4, "prompts_per_iteration": 2, "samples_per_prompt": 3, "mixed_precision": "no",
                   "sampling": {"max_new_tokens": 48}, "eval": {"every": 0}},
        "guidance": {"prompts": 8, "reuse_rollouts": True, "head": {"hidden_size": 32}, "lora": last_layers_lora(base, 1, r=4, alpha=8),
                     "learn": {"epochs": 1, "batch_size": 4, "lr": 1e-2, "mixed_precision": "no"}},
    })
    assert run_align(cfg)["finished"]
    lists = [json.loads(x)["lists"] for x in (tmp_path / "align" / "guidance.jsonl").read_text().splitlines()]
    assert len(lists) == 2 and min(lists) > 0  # both rounds learned
    rounds = [tmp_path / "align" / "guidance" / f"round-0000{i}" for i in (0, 2)]
    backbone = [load_file(r / "backbone" / "model.safetensors") for r in rounds]
    own = AutoModelForCausalLM.from_pretrained(base).base_model.state_dict()
    shared = [k for k in own if k in backbone[0]]
    assert shared and all(torch.equal(backbone[i][k], own[k]) for i in (0, 1) for k in shared)
    adapters = [load_file(next((r / "backbone-lora").glob("*.safetensors"))) for r in rounds]
    heads = [load_file(r / "head.safetensors") for r in rounds]
    assert any(not torch.equal(adapters[0][k], adapters[1][k]) for k in adapters[0])
    assert any(not torch.equal(heads[0][k], heads[1][k]) for k in heads[0])
