"""Resume and concurrency (issue 21): what a kill leaves is recovered, metrics rows are
written exactly once, a second run on the same folder is refused, a changed config is not
resumed silently, and runs killed again and again (also inside a checkpoint write, between
its two renames, in the middle of a metrics line) end with the uninterrupted run's
weights and rows, for ``train``, ``reward`` and ``align``."""

from __future__ import annotations

import json
import logging
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import Killed, save_tiny_chat_models

from tokenalign.utils.io import atomic_path, recover_atomic_writes
from tokenalign.utils.metrics import MetricsWriter
from tokenalign.utils.runfolder import (ConfigChanged, RunFolderBusy, RunLock, config_changes, open_run_folder)


# ---- what a kill leaves beside an atomic write ------------------------------------------
def test_recovery_removes_partial_writes_and_renames_old_back(tmp_path, caplog):
    (tmp_path / ".checkpoint.a1b2c3d4.tmp").mkdir()  # a kill while the checkpoint was written
    (tmp_path / ".checkpoint.a1b2c3d4.tmp" / "optimizer.pt").write_bytes(b"x" * 10)
    (tmp_path / ".metrics.jsonl.zz99.tmp").write_text("{")
    (tmp_path / ".checkpoint.old").mkdir()  # a kill between the two renames: no checkpoint/
    (tmp_path / ".checkpoint.old" / "state.json").write_text("{}")
    (tmp_path / "model").mkdir()
    (tmp_path / ".model.old").mkdir()  # a kill after the second rename, before .old was removed
    with caplog.at_level(logging.WARNING):
        done = recover_atomic_writes(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint", "model"]
    assert (tmp_path / "checkpoint" / "state.json").is_file()
    assert len(done) == 4 and "recovered" in caplog.text
    assert recover_atomic_writes(tmp_path) == []


def test_torn_last_line_is_dropped_and_a_bad_middle_line_raises(tmp_path, caplog):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"iteration": 0}\n{"iteration": 1}\n{"iteration": 2, "rew')
    log = MetricsWriter(path)
    with caplog.at_level(logging.WARNING):
        assert log.rows() == [{"iteration": 0}, {"iteration": 1}]
    assert "torn last line" in caplog.text
    log.trim(5)
    assert path.read_text() == '{"iteration": 0}\n{"iteration": 1}\n'
    path.write_text('{"iteration": 0}\n{"iteration": 1}')  # whole JSON but no newline: torn too
    log.trim(5)
    assert path.read_text() == '{"iteration": 0}\n'
    path.write_text('{"iteration": 0}\n{"iter\n{"iteration": 1}\n')
    with pytest.raises(ValueError, match="metrics.jsonl:2"):
        log.rows()


# ---- one run per folder ------------------------------------------------------------------
def test_a_second_run_on_the_folder_is_refused_naming_the_pid(tmp_path):
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (tmp_path / ".lock").write_text(json.dumps({"pid": child.pid, "host": os.uname().nodename}))
        with pytest.raises(RunFolderBusy, match=f"pid {child.pid}"):
            RunLock(tmp_path).acquire()
    finally:
        child.kill()
        child.wait()
    # the same lock, its process gone: stale, taken over with a warning
    with RunLock(tmp_path) as lock:
        assert json.loads(lock.path.read_text())["pid"] == os.getpid()
        with pytest.raises(RunFolderBusy, match=f"pid {os.getpid()}"):  # held in this process: refused too
            RunLock(tmp_path).acquire()
    assert not (tmp_path / ".lock").exists()
    (tmp_path / ".lock").write_text(json.dumps({"pid": 1, "host": "elsewhere"}))
    with pytest.raises(RunFolderBusy, match="pid 1 on host elsewhere"):  # another host's: cannot tell, refused
        RunLock(tmp_path).acquire()


def test_lock_is_exclusive_and_released(tmp_path):
    with RunLock(tmp_path):
        with open_run_folder(tmp_path / "inner", "a: 1\n"):  # another folder: fine
            pass
        monkey_rank = os.environ.get("RANK")
        os.environ["RANK"] = "1"  # another rank of a launched run: neither locks nor refuses
        try:
            with open_run_folder(tmp_path, "a: 1\n"):
                pass
        finally:
            if monkey_rank is None:
                del os.environ["RANK"]
            else:
                os.environ["RANK"] = monkey_rank
    assert not (tmp_path / ".lock").exists()
    with open_run_folder(tmp_path, "a: 1\n"):
        assert (tmp_path / ".lock").is_file()
    assert not (tmp_path / ".lock").exists()


def test_a_changed_config_is_not_resumed_unless_allowed(tmp_path):
    import yaml

    def text(cfg: dict) -> str:
        return yaml.safe_dump(cfg, sort_keys=False)

    cfg = {"lr": 1e-5, "objective": "ppo", "iterations": 10, "ppo": {"epochs": 4}}
    with open_run_folder(tmp_path, text(cfg), may_change=("iterations",)):
        (tmp_path / "checkpoint").mkdir()
        (tmp_path / "checkpoint" / "state.json").write_text("{}")
    longer = dict(cfg, iterations=20)
    with open_run_folder(tmp_path, text(longer), may_change=("iterations",)):  # extending a run is fine
        pass
    changed = {"lr": 1e-4, "objective": "rloo", "iterations": 20}
    with pytest.raises(ConfigChanged) as err:
        with open_run_folder(tmp_path, text(changed), may_change=("iterations",)):
            pass
    assert "lr: 1e-05 -> 0.0001; objective: 'ppo' -> 'rloo'" in str(err.value) and "--allow-config-change" in str(err.value)
    assert "iterations: 20" in (tmp_path / "config.yaml").read_text()  # the refused config is not saved
    with open_run_folder(tmp_path, text(changed), may_change=("iterations",), allow_config_change=True):
        pass
    assert "objective: rloo" in (tmp_path / "config.yaml").read_text()
    assert config_changes({"a": {"b": 1}, "gone": 1}, {"a": {"b": 1}, "new": 2}) == []


def test_the_train_command_refuses_a_changed_config(tmp_path, capsys):
    from tokenalign.cli import main

    out = tmp_path / "run"
    out.mkdir()
    (out / "config.yaml").write_text("objective: ppo\nlr: 1.0e-05\n")
    (out / "checkpoint").mkdir()
    (out / "checkpoint" / "state.json").write_text('{"iteration": 1}')
    assert main(["train", "--set", f"out_dir={out}", "--set", "objective=rloo"]) == 2
    err = capsys.readouterr().err
    assert "objective: 'ppo' -> 'rloo'" in err and len(err.strip().splitlines()) == 1


# ---- scorer limits -------------------------------------------------------------------------
def test_pep8_scorer_size_and_time_limits_fail_the_sample_never_hang():
    import time

    pytest.importorskip("pycodestyle")
    from tokenalign.scorers.base import failure_kind
    from tokenalign.scorers.pep8 import Pep8ScorerConfig, score_sample

    huge = "    x = " + "+".join(["a"] * 500_000) + "\n"  # 1 MB: ~15 s unchecked
    t0 = time.perf_counter()
    r = score_sample(huge, "def f():\n")
    assert r.failed and failure_kind(r) == "limit" and "max_chars" in r.failure
    assert time.perf_counter() - t0 < 1.0
    slow = "    x = a + b\n" * 4_000  # 56k characters of statements: ~0.5 s of pycodestyle
    t0 = time.perf_counter()
    r = score_sample(slow, "def f():\n", Pep8ScorerConfig(max_chars=0, time_limit=0.05))
    assert r.failed and failure_kind(r) == "limit" and "time_limit" in r.failure
    assert time.perf_counter() - t0 < 0.5
    assert not score_sample("    return 1\n", "def f():\n").failed


# ---- fault injection -----------------------------------------------------------------------
class Faults:
    """Kill a run at the ``at``-th event of a kind, the way SIGKILL would: ``replace`` (a
    rename of an atomic write), ``between`` (between the two renames of a folder swap: the
    target renamed to ``.NAME.old``, the new folder not yet in place), ``save`` (``torch.save`` of a checkpoint: its models are written, the rest
    not), ``append`` (a metrics row: half of it is written). Once killed, nothing cleans up
    (``finally`` blocks of atomic writes leave their temporaries, as a killed process does)."""

    def __init__(self, monkeypatch, kind: str, at: int) -> None:
        import tokenalign.utils.checkpoint as checkpoint
        import tokenalign.utils.io as io

        self.kind, self.at, self.seen, self.killed = kind, at, 0, False
        import tokenalign.policy.rollout_ranker as ranker
        import tokenalign.utils.metrics as metrics

        real_replace, real_save, real_remove, real_append = io._rename, checkpoint.torch.save, io._remove, io.append_jsonl

        def event(kind: str) -> bool:
            if self.killed:
                raise Killed
            if kind == self.kind:
                self.seen += 1
                if self.seen == self.at:
                    self.killed = True
                    return True
            return False

        def replace(src, dst):
            dst = Path(dst)
            second = dst.with_name(f".{dst.name}.old").exists() and not dst.exists()  # of a folder swap
            if (second and event("between")) or event("replace"):
                raise Killed
            real_replace(src, dst)

        def save(obj, f, *a, **k):
            if event("save"):
                raise Killed
            real_save(obj, f, *a, **k)

        def append(path, record):
            if event("append"):
                line = json.dumps(record)
                with open(path, "a", encoding="utf-8") as fh:
                    fh.write(line[: len(line) // 2])
                raise Killed
            real_append(path, record)

        def remove(p):
            if not self.killed:
                real_remove(p)

        monkeypatch.setattr(io, "_rename", replace)
        monkeypatch.setattr(checkpoint.torch, "save", save)
        monkeypatch.setattr(io, "_remove", remove)
        for module in (io, metrics, ranker):
            monkeypatch.setattr(module, "append_jsonl", append)


def _kill_again_and_again(run, out: Path, kills: list[tuple[str, int]]) -> list[tuple[str, int]]:
    """Run ``run()`` killed at each of ``kills`` in turn (a run that ends before its kill
    point just finishes), then to the end; returns the kills that happened."""
    fired = []
    for kind, at in kills:
        with pytest.MonkeyPatch.context() as mp:
            faults = Faults(mp, kind, at)
            try:
                run()
            except Killed:
                fired.append((kind, at))
            assert faults.killed or (out / "model").exists(), (kind, at)
    run()
    return fired


def _rows(path: Path, drop=("seconds", "rollout_seconds", "examples_per_second")) -> list[dict]:
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    return [{k: v for k, v in r.items() if k not in drop} for r in rows]


def _same_weights(a: Path, b: Path) -> None:
    files = sorted(p.relative_to(a) for p in a.rglob("*.safetensors"))
    assert files and files == sorted(p.relative_to(b) for p in b.rglob("*.safetensors"))
    for f in files:
        assert (a / f).read_bytes() == (b / f).read_bytes(), f  # bit for bit


def _no_leftovers(out: Path) -> None:
    for folder in (out, out / "guidance"):
        if folder.is_dir():
            assert not [p.name for p in folder.iterdir() if p.name.endswith((".tmp", ".old")) or p.name == ".lock"]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> Path:
    """A tiny chat GPT-2 (``lm/``), short English prompts and a length reward function
    (``brevity.py:reward``): small runs of task ``text`` that take a second or two."""
    root = save_tiny_chat_models(tmp_path_factory.mktemp("tiny-run"))
    prompts = ["Say hi.", "Name a colour.", "Count to three.", "Name a fruit.", "Describe the sea.", "Name a city."]
    (root / "prompts.jsonl").write_text("".join(json.dumps({"prompt": p}) + "\n" for p in prompts))
    (root / "brevity.py").write_text("def reward(prompts, completions, **kwargs):\n"
                                     "    return [-len(c) / 10 for c in completions]\n")
    return root


def _policy(tiny_run: Path, **extra) -> dict:
    return {"task": "text", "model": str(tiny_run / "lm"), "prompts": str(tiny_run / "prompts.jsonl"),
            "scorer": f"{tiny_run / 'brevity.py'}:reward", "iterations": 4, "prompts_per_iteration": 2,
            "samples_per_prompt": 2, "mixed_precision": "no", "progress": False, "sampling": {"max_new_tokens": 6},
            "eval": {"every": 2, "prompts": 2, "samples_per_prompt": 1, "sampling": {"max_new_tokens": 6}}, **extra}


def _kills(seed: int, n: int, ranges: dict[str, int]) -> list[tuple[str, int]]:
    """A kill inside the first checkpoint write, one between a checkpoint's renames, a torn
    metrics row, then ``n`` at random."""
    rng = random.Random(seed)
    scripted = [("save", 1), ("between", 1), ("append", 2)]
    return scripted + [(kind, rng.randint(1, ranges[kind])) for kind in rng.choices(sorted(ranges), k=n)]


def test_killed_train_runs_end_as_the_uninterrupted_run(tmp_path, tiny_run):
    from tokenalign.config import from_dict
    from tokenalign.jobs.train import TrainConfig, run_train

    def config(out: Path) -> TrainConfig:
        return from_dict(TrainConfig, {"out_dir": str(out), "objective": "rloo", **_policy(tiny_run)})

    run_train(config(tmp_path / "full"))
    out = tmp_path / "killed"
    fired = _kill_again_and_again(lambda: run_train(config(out)), out, _kills(0, 3, {"save": 2, "replace": 3, "append": 2}))
    assert len(fired) >= 4, fired
    _same_weights(tmp_path / "full" / "model", out / "model")
    assert _rows(out / "metrics.jsonl") == _rows(tmp_path / "full" / "metrics.jsonl")
    assert [r["iteration"] for r in _rows(out / "metrics.jsonl")] == [0, 1, 2, 3, 4]
    _no_leftovers(out)


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_resumed_ppo_lora_run_ends_with_the_uninterrupted_policy_and_value(tmp_path, tiny_run, arch):
    """PPO with LoRA on the policy and the value model: 2 iterations, stop, resume for 2
    more, and the policy's and value model's adapters and head (and the value model's base,
    saved with them) are bit for bit the 4-iteration run's."""
    from conftest import save_tiny_smollm2
    from tokenalign.config import from_dict
    from tokenalign.jobs.train import TrainConfig, run_train

    model = tiny_run / "lm" if arch == "gpt2" else save_tiny_smollm2(tmp_path / "llama")

    def config(out: Path, **extra) -> TrainConfig:
        return from_dict(TrainConfig, {"out_dir": str(out), **_policy(tiny_run, model=str(model), objective="ppo",
                                        lora={"enabled": True, "r": 4, "alpha": 8, "layers": [1]},
                                        ppo={"epochs": 2, "minibatch_size": 2}, **extra)})

    run_train(config(tmp_path / "full"))
    out = tmp_path / "resumed"
    run_train(config(out, stop_after_iterations=2))
    assert json.loads((out / "checkpoint" / "state.json").read_text())["iteration"] == 2
    assert (out / "checkpoint" / "value" / "backbone-lora" / "adapter_model.safetensors").is_file()
    run_train(config(out))
    for part in ("model", "checkpoint/policy", "checkpoint/value"):
        _same_weights(tmp_path / "full" / part, out / part)
    assert _rows(out / "metrics.jsonl") == _rows(tmp_path / "full" / "metrics.jsonl")


def test_killed_reward_runs_end_as_the_uninterrupted_run(tmp_path, tiny_tokenizer):
    from transformers import GPT2Config, GPT2Model

    from tokenalign.config import from_dict
    from tokenalign.jobs.reward import RewardRunConfig, run_reward

    backbone = tmp_path / "backbone"
    torch.manual_seed(0)
    GPT2Model(GPT2Config(vocab_size=len(tiny_tokenizer), n_embd=32, n_layer=1, n_head=2, n_positions=64)).save_pretrained(backbone)
    tiny_tokenizer.save_pretrained(backbone)
    data = tmp_path / "ranked.jsonl"
    rows = [{"prompt": f"def f{i}():\n", "responses": ["    return 1\n", "    return  1   \n", "  x=1\n"][: 2 + i % 2],
             "scores": [0, -1, -2][: 2 + i % 2]} for i in range(20)]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))

    def config(out: Path) -> RewardRunConfig:
        return from_dict(RewardRunConfig, {
            "out_dir": str(out), "backbone": str(backbone), "data": {"train": str(data), "format": "ranked"},
            "head": {"hidden_size": 16},
            "learn": {"epochs": 2, "batch_size": 4, "mixed_precision": "no", "save_every": 2, "log_every": 1, "progress": False},
        })

    run_reward(config(tmp_path / "full"))
    out = tmp_path / "killed"
    # 5 steps an epoch: checkpoints at steps 2, 4, epoch 1 (5), 6, 8, epoch 2 (10); rows every step and epoch
    fired = _kill_again_and_again(lambda: run_reward(config(out)), out, _kills(1, 4, {"save": 3, "replace": 6, "append": 6}))
    assert len(fired) >= 5, fired
    _same_weights(tmp_path / "full" / "model", out / "model")
    for name in ("metrics.jsonl", "steps.jsonl"):
        assert _rows(out / name) == _rows(tmp_path / "full" / name), name
    assert [r["step"] for r in _rows(out / "steps.jsonl")] == list(range(1, 11))
    _no_leftovers(out)


def test_killed_align_runs_end_as_the_uninterrupted_run(tmp_path, tiny_run):
    from tokenalign.config import from_dict
    from tokenalign.jobs.align import AlignConfig, run_align

    def config(out: Path) -> AlignConfig:
        return from_dict(AlignConfig, {
            "out_dir": str(out), "relearn_every": 2,
            "policy": _policy(tiny_run, samples_per_prompt=3, eval={"every": 0}),
            "guidance": {"prompts": 4, "reuse_rollouts": True, "head": {"hidden_size": 16},
                         "learn": {"epochs": 1, "batch_size": 2, "mixed_precision": "no", "progress": False}},
        })

    run_align(config(tmp_path / "full"))
    out = tmp_path / "killed"
    # a kill after a round and before the next checkpoint: the round is learned again
    kills = [("replace", 3)] + _kills(2, 3, {"save": 2, "replace": 3, "append": 3})
    fired = _kill_again_and_again(lambda: run_align(config(out)), out, kills)
    assert len(fired) >= 5, fired
    for part in ("model", "guidance"):
        _same_weights(tmp_path / "full" / part, out / part)
    for name in ("metrics.jsonl", "guidance.jsonl", "rollout_lists.jsonl"):
        assert _rows(out / name) == _rows(tmp_path / "full" / name), name
    assert [r["iteration"] for r in _rows(out / "metrics.jsonl")] == [1, 2, 3, 4]
    _no_leftovers(out)
