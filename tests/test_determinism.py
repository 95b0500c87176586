"""The same command and seed give bit-identical weights (on the same machine and thread
count), whatever ran before in the process: every new parameter is initialised after the
run's seed is set (the reward head was not)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from conftest import save_tiny_chat_models


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*.safetensors"))}


def _user_setup(tmp_path: Path) -> tuple[Path, str]:
    """A tiny chat model, six prompts and a brevity reward function file: (root, scorer spec)."""
    root = save_tiny_chat_models(tmp_path)
    (root / "prompts.jsonl").write_text("".join(json.dumps({"prompt": p}) + "\n"
                                                for p in ["Hi.", "A colour?", "A fruit?", "Sea?", "A city?", "Sky?"]))
    (root / "brevity.py").write_text("def reward(prompts, completions, **kwargs):\n    return [-len(c) / 10 for c in completions]\n")
    return root, f"{root / 'brevity.py'}:reward"


def _other_rng_use(noise: int) -> None:
    """Whatever ran before in the process: the run's own seed must decide."""
    torch.manual_seed(noise)
    torch.rand(noise)


def test_reward_runs_with_the_same_seed_are_bit_identical(tmp_path):
    from tokenalign.config import from_dict
    from tokenalign.jobs.reward import RewardRunConfig, run_reward

    root = save_tiny_chat_models(tmp_path)
    data = tmp_path / "pairs.jsonl"
    data.write_text("".join(json.dumps({"prompt": f"Q{i}?", "chosen": "Yes.", "rejected": "No, never, not at all."}) + "\n"
                            for i in range(12)))
    models = []
    for run, noise in enumerate((1, 2)):
        _other_rng_use(noise)
        out = tmp_path / f"run{run}"
        run_reward(from_dict(RewardRunConfig, {"out_dir": str(out), "backbone": str(root / "lm"), "data": {"train": str(data)},
                                               "head": {"hidden_size": 8},
                                               "learn": {"epochs": 1, "batch_size": 4, "progress": False}}))
        models.append(_files(out / "model"))
    assert models[0] and models[0] == models[1]


def test_align_runs_with_the_same_seed_are_bit_identical(tmp_path):
    from tokenalign.config import from_dict
    from tokenalign.jobs.align import AlignConfig, run_align

    root, scorer = _user_setup(tmp_path)
    outs = []
    for run, noise in enumerate((1, 2)):
        _other_rng_use(noise)
        out = tmp_path / f"run{run}"
        run_align(from_dict(AlignConfig, {
            "out_dir": str(out), "relearn_every": 1,
            "policy": {"task": "text", "model": str(root / "lm"), "prompts": str(root / "prompts.jsonl"),
                       "scorer": scorer, "iterations": 2, "prompts_per_iteration": 2,
                       "samples_per_prompt": 2, "progress": False, "sampling": {"max_new_tokens": 6}, "eval": {"every": 0}},
            "guidance": {"prompts": 2, "head": {"hidden_size": 8}, "learn": {"epochs": 1, "batch_size": 2, "progress": False}},
        }))
        outs.append(out)
    for part in ("model", "guidance"):
        assert _files(outs[0] / part) and _files(outs[0] / part) == _files(outs[1] / part), part


def test_train_runs_with_the_same_seed_are_bit_identical(tmp_path):
    from tokenalign.config import from_dict
    from tokenalign.jobs.train import TrainConfig, run_train

    root, scorer = _user_setup(tmp_path)
    models = []
    for run, noise in enumerate((1, 2)):
        _other_rng_use(noise)
        out = tmp_path / f"run{run}"
        run_train(from_dict(TrainConfig, {"out_dir": str(out), "task": "text", "model": str(root / "lm"), "objective": "ppo",
                                          "prompts": str(root / "prompts.jsonl"), "scorer": scorer,
                                          "iterations": 2, "prompts_per_iteration": 2, "samples_per_prompt": 2, "progress": False,
                                          "sampling": {"max_new_tokens": 6}, "eval": {"every": 0}}))
        models.append(_files(out / "model"))
    assert models[0] and models[0] == models[1]


def test_pretrain_runs_with_the_same_seed_are_bit_identical(tmp_path):
    pytest.importorskip("pycodestyle")
    from tokenalign.cli import main

    tiny = ["vocab_size=300", "n_layer=1", "n_embd=32", "n_head=2", "block_size=32", "batch_size=4", "warmup_steps=1",
            "eval_every=2", "eval_blocks=4", "save_every=100", "max_train_files=3", "mixed_precision=no", "steps=3"]
    models = []
    for run, noise in enumerate((1, 2)):
        _other_rng_use(noise)
        out = tmp_path / f"run{run}"
        assert main(["-q", "pretrain", *[a for s in [f"out_dir={out}", *tiny] for a in ("--set", s)]]) == 0
        models.append(_files(out / "model"))
    assert models[0] and models[0] == models[1]
