"""Every command in two CPU processes (gloo), launched as a user would: ``torchrun`` or
``accelerate launch --multi_gpu`` (on a machine without GPUs it starts CPU processes). Each
run finishes, writes each metrics row once (the main process writes; a resumed run adds
only its new rows), shares the work (per-iteration sample counts, reward-learning steps
and eval samples are those of one process doing it all once), and its outputs load.

Each command is launched in a fresh interpreter (forking a pytest process whose torch
threads run can deadlock gloo); a launch that hangs is retried once in a fresh folder, as
in ``test_policy_train.test_two_process_cpu_run``.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import run_retrying_a_hang, save_tiny_chat_models

SRC = Path(__file__).resolve().parents[1] / "src"


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> dict[str, Path | str]:
    """A tiny chat model, eight prompts, a brevity reward function and twelve pairs."""
    root = save_tiny_chat_models(tmp_path_factory.mktemp("mp"))
    (root / "prompts.jsonl").write_text("".join(json.dumps({"prompt": p}) + "\n" for p in
                                                ["Hi.", "A colour?", "A fruit?", "Sea?", "A city?", "Sky?", "Tree?", "Dog?"]))
    (root / "brevity.py").write_text("def reward(prompts, completions, **kwargs):\n    return [-len(c) / 10 for c in completions]\n")
    (root / "pairs.jsonl").write_text("".join(json.dumps({"prompt": f"Q{i}?", "chosen": "Yes.", "rejected": "No, never."}) + "\n"
                                              for i in range(12)))
    return {"root": root, "lm": root / "lm", "scorer": f"{root / 'brevity.py'}:reward"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch(launcher: str, args: list[str], out: Path, ok: bool = True) -> subprocess.CompletedProcess:
    """``tokenalign -q ARGS --set out_dir=...`` under ``launcher`` (torchrun | accelerate) in two
    processes; retried once in a fresh folder when it hangs."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), str(Path(__file__).parent)]), "OMP_NUM_THREADS": "1",
           "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    def folder_for(attempt: int) -> Path:
        return out if attempt == 0 else out.with_name(out.name + "-retry")

    def command(attempt: int) -> list[str]:
        if launcher == "torchrun":
            head = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
        else:
            head = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
                    "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
                    "--main_process_port", str(_free_port())]
        return [*head, "-m", "tokenalign", "-q", *args, "--set", f"out_dir={folder_for(attempt)}"]

    done, attempt = run_retrying_a_hang(command, env, timeout=180)
    folder = folder_for(attempt)
    if ok:
        assert done.returncode == 0, done.stderr[-4000:]
    done.folder = folder  # type: ignore[attr-defined]
    return done


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _policy_args(s: dict, prefix: str = "") -> list[str]:
    keys = {"task": "text", "model": s["lm"], "prompts": s["root"] / "prompts.jsonl", "scorer": s["scorer"],
            "prompts_per_iteration": 2, "samples_per_prompt": 2, "progress": "false", "sampling.max_new_tokens": 6,
            "eval.prompts": 2, "eval.every": 1, "eval.sampling.max_new_tokens": 6, "save_every": 1}
    return [a for k, v in keys.items() for a in ("--set", f"{prefix}{k}={v}")]


def test_reward_in_two_processes(setup, tmp_path):
    """accelerate launch: each process learns on its half of every batch; the steps are one
    process's (11 training pairs, batches of 4: 3 steps), each row once, the model loads."""
    from tokenalign.rewards.model import TokenRewardModel

    done = _launch("accelerate", ["reward", "--set", f"backbone={setup['lm']}", "--set", f"data.train={setup['root'] / 'pairs.jsonl'}",
                                  "--set", "head.hidden_size=8", "--set", "learn.batch_size=4", "--set", "learn.log_every=1",
                                  "--set", "learn.progress=false"], tmp_path / "reward")
    out = done.folder
    assert [r["step"] for r in _rows(out / "steps.jsonl")] == [1, 2, 3]
    assert [r["epoch"] for r in _rows(out / "metrics.jsonl")] == [1]
    assert "eval_ranking_accuracy" in _rows(out / "metrics.jsonl")[0]
    assert json.loads((out / "checkpoint" / "state.json").read_text())["step"] == 3
    TokenRewardModel.from_pretrained(out / "model")
    assert not (out / ".lock").exists()


def test_train_in_two_processes_resumes_with_each_row_once(setup, tmp_path):
    """torchrun: one iteration, then a rerun that resumes from the checkpoint (each rank its
    own RNG states) and finishes; rows 0, 1, 2 once each, 4 samples per iteration (2 prompts
    x 2, a prompt per process), the model loads."""
    from transformers import AutoModelForCausalLM

    args = ["train", "--set", "objective=ppo", "--set", "iterations=2", *_policy_args(setup)]
    first = _launch("torchrun", [*args, "--set", "stop_after_iterations=1"], tmp_path / "train")
    out = first.folder
    assert json.loads((out / "checkpoint" / "state.json").read_text())["iteration"] == 1
    _launch("torchrun", args, out)
    rows = _rows(out / "metrics.jsonl")
    assert [r["iteration"] for r in rows] == [0, 1, 2]
    assert all(r["samples"] == 4 for r in rows[1:])
    assert json.loads((out / "summary.json").read_text())["finished"]
    AutoModelForCausalLM.from_pretrained(out / "model")


def test_align_in_two_processes(setup, tmp_path):
    """torchrun: each process samples its share of the guidance prompts and of each rollout;
    every rollout's ranked lists (2 prompts) and every round are written once."""
    from tokenalign.rewards.model import TokenRewardModel
    from transformers import AutoModelForCausalLM

    args = ["align", "--set", "relearn_every=1", "--set", "policy.iterations=2", *_policy_args(setup, "policy."),
            "--set", "guidance.prompts=2", "--set", "guidance.head.hidden_size=8", "--set", "guidance.learn.epochs=1",
            "--set", "guidance.learn.batch_size=2", "--set", "guidance.learn.progress=false"]
    out = _launch("torchrun", args, tmp_path / "align").folder
    assert [r["iteration"] for r in _rows(out / "metrics.jsonl")] == [0, 1, 2]
    assert [r["iteration"] for r in _rows(out / "guidance.jsonl")] == [0, 1]
    lists = _rows(out / "rollout_lists.jsonl")
    assert sorted(r["iteration"] for r in lists) == [0, 0, 1, 1]
    assert sorted({r["prompt"] for r in lists if r["iteration"] == 0}) == sorted(r["prompt"] for r in lists if r["iteration"] == 0)
    AutoModelForCausalLM.from_pretrained(out / "model")
    TokenRewardModel.from_pretrained(out / "guidance" / "round-00001")


def test_eval_in_two_processes(setup, tmp_path):
    """accelerate launch: each process samples and scores half the prompts; the main process
    writes the 4 x 2 samples once, in prompt order."""
    args = ["eval", "--set", "task=text", "--set", f"model={setup['lm']}", "--set", f"prompts={setup['root'] / 'prompts.jsonl'}",
            "--set", f"scorer={setup['scorer']}", "--set", "n_prompts=4", "--set", "samples_per_prompt=2",
            "--set", "sampling.max_new_tokens=6", "--set", f"reference={setup['lm']}"]
    out = _launch("accelerate", args, tmp_path / "eval").folder
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["samples"] == 8 and "kl_to_reference" in metrics
    prompts = [r["prompt"] for r in _rows(out / "samples.jsonl")]
    assert prompts == [p for p in ["Hi.", "A colour?", "A fruit?", "Sea?"] for _ in range(2)]


def test_a_busy_folder_stops_every_rank_with_one_line(setup, tmp_path):
    """The run-folder lock in a multi-process run: rank 0 refuses a folder another live run
    holds, and rank 1 stops with its error instead of waiting for it."""
    import socket as sock

    out = tmp_path / "busy"
    out.mkdir()
    (out / ".lock").write_text(json.dumps({"pid": os.getpid(), "host": sock.gethostname(), "started": 0}))
    done = _launch("torchrun", ["reward", "--set", f"backbone={setup['lm']}", "--set", f"data.train={setup['root'] / 'pairs.jsonl'}"],
                   out, ok=False)
    assert done.returncode != 0
    assert "is in use by another run" in done.stderr and "rank 0 stopped" in done.stderr
    assert "[rank0]: Traceback" not in done.stderr and "[rank1]: Traceback" not in done.stderr  # one line each, no traceback


def test_accelerate_cpu_launch_of_one_process_is_refused(setup, tmp_path):
    """``accelerate launch --cpu --num_processes 2`` starts one process without MPI: refused
    with one line naming the launch that works, rather than one process doing it all."""
    env = {**os.environ, "PYTHONPATH": str(SRC), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--cpu", "--num_processes", "2", "--num_machines", "1",
           "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "tokenalign", "data", "check",
           "--format", "pairs", str(setup["root"] / "pairs.jsonl")]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode != 0 and "--multi_gpu --num_processes N" in done.stderr
