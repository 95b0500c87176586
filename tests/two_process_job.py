"""Run by test_policy_train.test_two_process_cpu_run under `accelerate launch` (2 CPU processes)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import torch

from conftest import build_tiny_lm, build_tiny_tokenizer
from test_policy_train import _config, _trainer
from tokenalign.objectives.ppo import PPOSettings


def main(out: Path) -> None:
    tok = build_tiny_tokenizer()
    cfg = _config("ppo", "token", iterations=2, prompts_per_iteration=4, objective_settings=PPOSettings(epochs=1, minibatch_size=4))
    trainer = _trainer(cfg, tok, out_dir=out / "run")
    acc = trainer.accelerator
    assert acc.num_processes == 2, acc.num_processes
    assert len(trainer.iteration_prompts(0)) == 2  # each process samples its half
    cfg.save_every = 1
    trainer.fit()
    with torch.no_grad():
        checksum = torch.stack([p.double().sum() for p in trainer.unwrapped_policy.parameters()]).sum().view(1)
        start = build_tiny_lm(tok)
        moved = sum(float((a - b).abs().sum()) for a, b in zip(trainer.unwrapped_policy.parameters(), start.parameters()))
    both = acc.gather(checksum)
    assert torch.allclose(both[0], both[1]), both  # DDP kept the replicas identical
    assert moved > 0
    assert (out / "run" / "checkpoint" / "state.json").is_file()
    (out / f"rank{acc.process_index}.ok").write_text("ok")
    trainer.close()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
    # Skip interpreter teardown: a gloo group's threads at exit have aborted or hung a rank
    # (intermittently, after all the checks above passed and the group was destroyed).
    sys.stdout.flush()
    os._exit(0)
