"""Every YAML in examples/ runs through its command in quick mode (tiny sizes; the
bring-your-own examples on a tiny chat model in place of the hub model they name), and
the help texts cite only example files that exist."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from conftest import save_tiny_chat_models

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"

# per example: its command and the overrides that make it a smoke test
POLICY_QUICK = ["iterations=1", "prompts_per_iteration=2", "samples_per_prompt=2", "sampling.max_new_tokens=8",
                "eval.every=1", "eval.prompts=2", "eval.samples_per_prompt=1", "eval.sampling.max_new_tokens=8",
                "mixed_precision=no"]
QUICK = {
    "train-ppo-sequence.yaml": ("train", POLICY_QUICK),
    "byo-train.yaml": ("train", POLICY_QUICK),
    "dpo-pep8.yaml": ("train", POLICY_QUICK),
    "rto-pep8.yaml": ("train", POLICY_QUICK + ["ppo.epochs=1", "ppo.minibatch_size=4"]),
    "align-pep8.yaml": ("align", [f"policy.{kv}" for kv in POLICY_QUICK] + [
        "guidance.prompts=2", "guidance.learn.max_length=64"]),
    "byo-align.yaml": ("align", [f"policy.{kv}" for kv in POLICY_QUICK] + ["guidance.prompts=2", "relearn_every=1"]),
    "reward-hh-pairs.yaml": ("reward", ["data.limit=8", "learn.epochs=1", "learn.max_length=64", "learn.mixed_precision=no"]),
    "reward-edits.yaml": ("reward", ["learn.epochs=1", "learn.mixed_precision=no"]),
    "byo-reward.yaml": ("reward", ["learn.epochs=1", "learn.mixed_precision=no"]),
    "eval-pep8.yaml": ("eval", ["n_prompts=2", "samples_per_prompt=2", "sampling.max_new_tokens=8", "expected_max_k=2"]),
    "byo-eval.yaml": ("eval", ["n_prompts=2", "samples_per_prompt=2", "sampling.max_new_tokens=8"]),
}
EDITS = [{"prompt": "def add(a, b):", "original": "\n    return a+b\n", "edited": "\n    return a + b\n"},
         {"prompt": "def f(x):", "original": "\n    y=x*2\n    return y\n", "edited": "\n    y = x * 2\n    return y\n"}] * 4


def test_every_example_has_a_quick_run():
    assert sorted(p.name for p in EXAMPLES.glob("*.yaml")) == sorted(QUICK)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return save_tiny_chat_models(tmp_path_factory.mktemp("examples"))


@pytest.mark.parametrize("name", sorted(QUICK))
def test_example_runs(name, tiny, tmp_path, monkeypatch):
    from tokenalign.cli import main

    monkeypatch.chdir(ROOT)  # the examples name their data relative to the repository
    command, quick = QUICK[name]
    config = yaml.safe_load((EXAMPLES / name).read_text())
    overrides = [f"out_dir={tmp_path / 'run'}", *quick]
    lm = str(tiny / "lm")
    if name.startswith("byo-"):  # the tiny chat model stands in for the hub model the example names
        key = {"reward": "backbone", "align": "policy.model"}.get(command, "model")
        overrides.append(f"{key}={lm}")
        if command == "eval":
            overrides.append(f"reference={lm}")
    if name == "reward-edits.yaml":  # the demo's edits file, made here
        (tmp_path / "edits.jsonl").write_text("".join(json.dumps(e) + "\n" for e in EDITS))
        overrides.append(f"data.train={tmp_path / 'edits.jsonl'}")
    if name == "rto-pep8.yaml":  # its DPO model, from the dpo example in quick mode
        dpo_out = tmp_path / "dpo"
        dpo_args = ["-c", str(EXAMPLES / "dpo-pep8.yaml"), "--set", f"out_dir={dpo_out}"]
        assert main(["train", *dpo_args, *[x for kv in QUICK["dpo-pep8.yaml"][1] for x in ("--set", kv)]]) == 0
        overrides.append(f"reward.model={dpo_out / 'model'}")
    assert config  # a readable YAML
    args = [command, "-c", str(EXAMPLES / name), *[x for kv in overrides for x in ("--set", kv)]]
    assert main(args) == 0
    out = tmp_path / "run"
    expected = {"train": "summary.json", "align": "summary.json", "reward": "final_metrics.json", "eval": "metrics.json"}
    assert (out / expected[command]).is_file()


def test_help_texts_cite_only_existing_examples():
    cited = set()
    for source in (ROOT / "src" / "tokenalign").rglob("*.py"):
        cited |= set(re.findall(r"examples/[\w./-]+\.(?:yaml|py)", source.read_text(encoding="utf-8")))
    for doc in [ROOT / "README.md", *(ROOT / "docs").glob("*.md")]:
        cited |= set(re.findall(r"examples/[\w./-]+\.(?:yaml|py|jsonl)", doc.read_text(encoding="utf-8")))
    assert cited, "no example cited anywhere"
    missing = sorted(c for c in cited if not (ROOT / c).is_file())
    assert not missing, f"cited but missing: {missing}"
