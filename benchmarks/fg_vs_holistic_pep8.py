"""Fine-grained vs holistic PPO from the same minimal edits (Xu et al., ACL 2024) on pep8.

Xu et al. train a token reward model on the diff of each (response, minimal edit) pair and
run fine-grained PPO on its per-token rewards; the baseline is PPO on a sequence reward
model learned from the same data as pairs (edit preferred to original). Their claim: at
the same data, fine-grained PPO wins more often against the reference model (+5.1 points
win rate, judged by an automatic annotator). This benchmark runs that comparison on the
pep8 task with nothing but the edits shared:

1. **data**: 4 base-model samples (T 0.7, top-p 0.9) of each of the first ``--edit-prompts``
   *training* prompts, minimally edited by autopep8 (``tokenalign demo --set
   prompt_split=train``; test prompts are never touched). Samples autopep8 leaves unchanged
   (clean, or a syntax error it cannot fix) give no pair. The pairs are split by prompt
   into training and held-out (``--heldout-fraction``).
2. **reward models**, one backbone (the shipped base model) and one head config
   (``bounding: centered_sigmoid``) for both, the same epochs and learning rate:
   the *token* RM learns the edit-diff labels (Xu's token classifier: deleted/replaced
   tokens of the original bad, inserted/replaced tokens of the edit good, unchanged
   tokens excluded; r_t = 2 p(good) - 1); the *sequence* RM learns the same pairs with
   Bradley-Terry on the last token's score alone (``aggregator: last``). Each is scored
   on the held-out pairs: the share where it prefers the edit (the token RM by the sum
   of its token rewards, what fine-grained PPO collects, and by their mean).
3. **PPO, per seed**, the same sample budget, optimiser and PPO settings (4 epochs, clip 0.2,
   value clip 0.2, γ 1, rewards whitened after the KL penalty, advantages whitened, a
   separate value model, 4 samples per prompt), stopping early when the rollout KL
   exceeds 10 in 5 iterations (FineGrainedRLHF's kl_threshold):
   - ``fine-grained``: every token its own reward from the token RM, KL coefficient 0.3, λ 0.95;
   - ``holistic``: the sequence RM's score on the last token, KL coefficient 0.2, λ 0.99;
     the score divided by its standard deviation over the training responses (the paper's
     baseline normalises its RM's score by a fixed mean and std).
4. **evaluation** (``tokenalign eval``) of each final policy on ``--eval-prompts`` held-out
   test prompts x ``--eval-samples``, sampled at T 0.7 / top-p 0.9 with the run's seed, the
   base model sampled with the same prompts and seeds: failure rate, syntax failures,
   misalignment of valid samples (pycodestyle violations per character), violation-free
   share, comment-line share, empty answers, length, distinct-2, KL to the base model
   (2 samples at T 1 of each of the first ``--kl-prompts`` test prompts), and the win
   rate against the base model's sample of the same prompt and seed, judged by
   pycodestyle (ties half) — the gold scorer, not the training signal (both policies
   train on learned RMs).
5. a markdown table (OUT/table.md), mean ± half-width of the 95% t-interval over seeds,
   and the paired per-seed difference fine-grained - holistic; everything in
   OUT/results.json (and ``--json``). benchmarks/results/fg_vs_holistic_pep8.md is written
   by hand from them.

Kept from the paper's code (FineGrainedRLHF): KL coefficients, λ, γ, clip ranges, 4 PPO
epochs, 4 samples per prompt, reward whitening, the KL stop. Changed, and why: rollouts
at temperature 1 without top-k (FineGrainedRLHF: T 0.7, top-k 20) so the log-probs PPO
uses are those of the distribution sampled; learning rate 5e-5 (theirs: 1e-5 for T5-large,
80k episodes; a 4.3M model at a ~1k-sample budget needs a larger step to move at all);
gradient clipping at 1 (theirs: off); fine-grained rewards r_t = 2 p(good) - 1 per
token (theirs: fixed ±0.3 / ±0.5 per sentence from several RMs); an automatic editor
(autopep8) instead of human edits; the gold pycodestyle scorer as the win-rate judge;
responses of at most 64 tokens everywhere (data, rollouts, evaluation; the other pep8
benchmarks use 128) and a budget of 16 iterations x 8 prompts x 4 samples = 512 samples
per run (theirs: 80k episodes), so that 3 seeds fit a 2-core CPU VM.

Run (on the shared 2-core CPU VM, load 6-10, it took ~65 minutes with each seed in its own
process — ``--seeds 0``, ``--seeds 1``, ``--seeds 2`` on the same ``--out`` once the RMs
exist — each PPO run 11-14 minutes; a quiet machine was not measured):

    python benchmarks/fg_vs_holistic_pep8.py --out runs/fg-holistic --seeds 0 1 2
    python benchmarks/fg_vs_holistic_pep8.py --out runs/fg-smoke --smoke      # tiny, < 30 s quiet

Each piece (data, each RM, each PPO run, each evaluation) is skipped when its folder
already holds its result, so a killed run resumes by rerunning the command.

``fg_vs_holistic_pii.py`` runs the same comparison on the pii task with this file's
task-independent pieces (the pair split, RM and PPO specs, RM report, per-seed loop, table).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import platform
import random
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_policy_pep8 import edits_dataset, learn_reward_model, run_method  # noqa: E402
from summarize_demo_runs import mean_and_halfwidth  # noqa: E402

log = logging.getLogger("fg_vs_holistic_pep8")
METHODS = ("fine-grained", "holistic")
# (key in tokenalign eval's metrics.json, label, format)
MEASURES = [
    ("win_rate_vs_reference", "win rate vs base (pycodestyle judge)", ".3f"),
    ("mean_misalignment", "mean misalignment (failures at 1.0)", ".4f"),
    ("failure_rate", "failed samples", ".3f"),
    ("syntax_failure_rate", "syntax failures", ".3f"),
    ("mean_misalignment_valid", "misalignment of valid samples", ".4f"),
    ("violation_free_rate", "violation-free", ".3f"),
    ("comment_line_share", "comment lines (`#`)", ".3f"),
    ("empty_rate", "no code (docstring / comments only: a failure)", ".3f"),
    ("empty_share", "blank answers", ".3f"),
    ("mean_length_tokens", "mean length (tokens)", ".1f"),
    ("distinct_2", "distinct-2", ".3f"),
    ("kl_to_reference", "KL to base (per sample)", ".2f"),
]


def split_pairs(edits: Path, out: Path, heldout_fraction: float, seed: int = 0) -> dict[str, Path]:
    """edits.jsonl -> train/held-out edits and the same rows as pairs (edited chosen over
    original), split by prompt so no held-out prompt is trained on."""
    rows = [json.loads(x) for x in edits.read_text().splitlines() if x.strip()]
    prompts = sorted({r["prompt"] for r in rows})
    random.Random(seed).shuffle(prompts)
    n_held = max(1, round(len(prompts) * heldout_fraction)) if len(prompts) > 1 else 0
    held = set(prompts[:n_held])
    files = {}
    for part, keep in (("train", lambda r: r["prompt"] not in held), ("heldout", lambda r: r["prompt"] in held)):
        part_rows = [r for r in rows if keep(r)]
        files[f"{part}_edits"] = out / f"{part}-edits.jsonl"
        files[f"{part}_pairs"] = out / f"{part}-pairs.jsonl"
        files[f"{part}_edits"].write_text("".join(json.dumps(r) + "\n" for r in part_rows))
        files[f"{part}_pairs"].write_text("".join(json.dumps({"prompt": r["prompt"], "chosen": r["edited"], "rejected": r["original"]})
                                                  + "\n" for r in part_rows))
    return files


def reward_model_specs(files: dict[str, Path], epochs: int, lr: float = 1e-4, **backbone: Any) -> dict[str, dict]:
    """The token RM (edit labels) and the sequence RM (pairs, aggregator last): one backbone,
    one head config, the same optimisation. ``backbone``: RewardRunConfig keys both share
    (``backbone``, ``lora``; none: the shipped pep8 model, fully trained)."""
    head = {"bounding": "centered_sigmoid"}
    learn = {"epochs": epochs, "lr": lr, "max_length": 256, "seed": 0}
    return {
        "token": {"data": {"train": str(files["train_edits"]), "eval": str(files["heldout_edits"]), "format": "edits"},
                  "head": head, "learn": learn, **backbone},
        "sequence": {"data": {"train": str(files["train_pairs"]), "eval": str(files["heldout_pairs"]), "format": "pairs"},
                     "head": head, "learn": {**learn, "aggregator": "last"}, **backbone},
    }


def rm_report(model_dir: Path, files: dict[str, Path]) -> dict:
    """Held-out pair accuracy (edit preferred) by every aggregate, and the std of the
    "last" score over the training responses (the holistic reward's normaliser)."""
    from tokenalign.rewards.model import TokenRewardModel
    from tokenalign.rewards.scoring import ranking_accuracy, score_tokens
    from tokenalign.utils.models import load_tokenizer

    done = model_dir.parent / "pair_report.json"
    if done.is_file():
        return json.loads(done.read_text())
    rm, tok = TokenRewardModel.from_pretrained(model_dir), load_tokenizer(model_dir)
    report: dict = {}
    for part in ("heldout", "train"):
        pairs = [json.loads(x) for x in files[f"{part}_pairs"].read_text().splitlines() if x.strip()]
        prompts = [p["prompt"] for p in pairs for _ in (0, 1)]
        scored = score_tokens(rm, tok, prompts, [r for p in pairs for r in (p["chosen"], p["rejected"])], max_length=256)
        lists = [scored[2 * i : 2 * i + 2] for i in range(len(pairs))]
        if part == "heldout":
            report["heldout_pairs"] = len(pairs)
            for how in ("sum", "avg", "last"):
                report[f"heldout_accuracy_{how}"] = ranking_accuracy(lists, [(1.0, 0.0)] * len(pairs), how)
        else:
            last = [s.rewards[-1] for s in scored if s.rewards]
            mean = sum(last) / len(last)
            report["train_pairs"] = len(pairs)
            report["train_last_std"] = math.sqrt(sum((v - mean) ** 2 for v in last) / max(len(last) - 1, 1))
    done.write_text(json.dumps(report, indent=2) + "\n")
    return report


def ppo_specs(args: argparse.Namespace, seed: int, rms: dict[str, Path], seq_std: float, **run: Any) -> dict[str, dict]:
    """Both arms' ``tokenalign train`` configs: one budget and PPO setup, the paper's KL
    coefficient and λ per arm. ``run``: TrainConfig keys both share (``task``, ``model``, ``lora``)."""
    common = {**run, "kind": "train", "objective": "ppo", "iterations": args.iterations,
              "prompts_per_iteration": args.prompts_per_iteration, "samples_per_prompt": 4, "sampling": {"max_new_tokens": args.max_new_tokens}, "lr": args.lr,
              "eval": {"every": 0}, "seed": seed, "stop_kl": 10.0, "stop_kl_patience": 5}
    ppo = {"epochs": 4, "minibatch_size": 16, "clip": 0.2, "value_clip": 0.2, "gamma": 1.0, "whiten_rewards": True}
    return {
        "fine-grained": {**common, "kl_coef": 0.3, "ppo": {**ppo, "lam": 0.95},
                         "reward": {"source": "token_model", "token_model": str(rms["token"]), "placement": "token"}},
        "holistic": {**common, "kl_coef": 0.2, "ppo": {**ppo, "lam": 0.99},
                     "reward": {"source": "token_model", "token_model": str(rms["sequence"]), "placement": "sequence",
                                "aggregate": "last", "scale": 1.0 / max(seq_std, 1e-6)}},
    }


def evaluate(model: str, out: Path, seed: int, args: argparse.Namespace, base: Path | None = None) -> dict:
    """``tokenalign eval`` on the held-out test prompts (kept if its metrics.json is there).

    The base model is evaluated once per seed (``base`` None). A policy's win rate is against
    those base samples: the same prompts, settings and seed, so slot i of each is the same
    prompt and random stream — what ``tokenalign eval --reference`` samples again, read
    from the base's samples.jsonl instead of sampled twice. KL(π || base) per sample comes
    from ``--kl-prompts`` x 2 fresh samples of the policy at temperature 1."""
    from tokenalign.config import from_dict
    from tokenalign.evaluate.metrics import win_rate
    from tokenalign.jobs.eval import EvalConfig, run_eval

    if (out / "done.json").is_file():
        return json.loads((out / "done.json").read_text())
    spec = {"model": model, "task": "pep8", "n_prompts": args.eval_prompts, "samples_per_prompt": args.eval_samples,
            "expected_max_k": args.eval_samples, "seed": seed, "out_dir": str(out), "reference": "none",
            "kl_samples": False, "sampling": {"max_new_tokens": args.max_new_tokens}}
    metrics = run_eval(from_dict(EvalConfig, spec))
    if base is None:
        metrics.update(win_rate_vs_reference=0.5, kl_to_reference=0.0)  # itself, by construction
    else:
        def scores(folder: Path) -> list[float]:
            return [json.loads(x)["misalignment"] for x in (folder / "samples.jsonl").read_text().splitlines() if x.strip()]

        metrics["win_rate_vs_reference"] = win_rate(scores(out), scores(base), lower_is_better=True)
        metrics["kl_to_reference"] = kl_to_base(model, seed, args)
    (out / "done.json").write_text(json.dumps(metrics, indent=2) + "\n")
    return metrics


def kl_to_base(model: str, seed: int, args: argparse.Namespace) -> float:
    """KL(π || base) per sample: 2 samples of each of the first ``--kl-prompts`` test prompts
    at temperature 1 (no top-p), Σ_t log π - log π_base over each, averaged."""
    import torch

    from tokenalign.evaluate.policy_eval import sequence_kl
    from tokenalign.rollout.batch import token_logprobs
    from tokenalign.rollout.generate import SamplingConfig, SamplingSettings, fit_prompts, generate
    from tokenalign.tasks import get_task
    from tokenalign.utils.models import load_causal_lm

    task = get_task("pep8")
    policy, tokenizer = load_causal_lm(model)
    ref, _ = load_causal_lm(str(task.model_path()))
    settings = SamplingSettings(max_new_tokens=args.max_new_tokens)
    prompts = [p for p in fit_prompts(task.prompts("test", args.kl_prompts), tokenizer, policy, settings) for _ in (0, 1)]
    with torch.no_grad():
        samples = generate(policy, tokenizer, prompts, SamplingConfig.of(settings, stop=list(task.stop), seed=seed + 1))
        return sequence_kl(policy, lambda b: token_logprobs(ref, b)["logprobs"], tokenizer, samples)


def cell(values: list[float], fmt: str) -> str:
    values = [v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    if not values:
        return "–"
    mean, half = mean_and_halfwidth(values)
    return f"{mean:{fmt}}" if math.isnan(half) else f"{mean:{fmt}} ± {half:{fmt.lstrip('+')}}"


def table(evals: dict[str, dict[int, dict]], seeds: list[int], measures: list[tuple[str, str, str]] = MEASURES) -> str:
    """Markdown: each measure's mean ± 95% half-width over seeds per column, and the paired
    per-seed difference fine-grained - holistic."""
    cols = ["base model", *METHODS]
    lines = ["| measure | " + " | ".join(cols) + " | fine-grained - holistic (paired) |", "|---|" + "---|" * (len(cols) + 1)]
    for key, label, fmt in measures:
        if not any(key in evals[c][s] for c in cols for s in seeds):
            continue  # a measure this run did not take (e.g. no judge)
        cells = [cell([evals[c][s].get(key) for s in seeds], fmt) for c in cols]
        diff = cell([evals["fine-grained"][s][key] - evals["holistic"][s][key] for s in seeds
                     if key in evals["fine-grained"][s] and key in evals["holistic"][s]], "+" + fmt)
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {diff} |")
    return "\n".join(lines)


def train_and_evaluate(args: argparse.Namespace, out: Path, rms: dict[str, Path], seq_std: float, evaluate: Callable,
                       **run: Any) -> tuple[dict[str, dict[int, dict]], dict[str, dict[int, dict]]]:
    """Per seed: the base model's evaluation, then each arm's PPO run and its evaluation
    (``evaluate(model, folder, seed, args, base=None | base folder)``; every piece kept when
    done). ``run``: TrainConfig keys both arms share. ``args.arms`` (if set) runs only those
    arms, so that two processes can share a seed. Returns (runs, evals) by arm and seed."""
    runs: dict[str, dict[int, dict]] = {m: {} for m in METHODS}
    evals: dict[str, dict[int, dict]] = {c: {} for c in ("base model", *METHODS)}
    arms = getattr(args, "arms", None) or METHODS
    for seed in args.seeds:
        evals["base model"][seed] = evaluate(run.get("model", ""), out / f"eval-base-{seed}", seed, args)
        for name, spec in ppo_specs(args, seed, rms, seq_std, **run).items():
            if name not in arms:
                continue
            result = run_method(f"{name}-{seed}", spec, out)
            runs[name][seed] = {k: result[k] for k in ("samples", "tokens", "train_seconds", "iterations", "stopped_early",
                                                        "rollout_kl", "rollout_reward")}
            evals[name][seed] = evaluate(str(out / f"{name}-{seed}" / "model"), out / f"eval-{name}-{seed}", seed, args,
                                         base=out / f"eval-base-{seed}")
    return runs, evals


def write_results(out: Path, args: argparse.Namespace, script: str, md: str, t0: float, rm_reports: dict, runs: dict,
                  evals: dict, **extra: Any) -> dict:
    """OUT/results.json (and ``--json``), OUT/table.md; prints the table and per-run lines."""
    report = {
        "command": f"python benchmarks/{script} " + " ".join(sys.argv[1:]),
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{platform.machine()} {platform.processor() or ''}, Python {platform.python_version()}".strip(),
        "args": vars(args), "seeds": args.seeds, **extra,
        "reward_models": rm_reports, "ppo": runs,
        "eval": {c: {str(s): m for s, m in per.items()} for c, per in evals.items()},
        "table": md, "seconds": time.perf_counter() - t0,
    }
    for path in [out / "results.json", *([Path(args.json)] if args.json else [])]:
        path.write_text(json.dumps(report, indent=2) + "\n")
    (out / "table.md").write_text(md + "\n")
    print(md)
    for kind, r in rm_reports.items():
        print(f"{kind} RM: held-out pair accuracy sum {r['heldout_accuracy_sum']:.3f} avg {r['heldout_accuracy_avg']:.3f} "
              f"last {r['heldout_accuracy_last']:.3f} ({r['heldout_pairs']} pairs)")
    for name, per in runs.items():
        for seed, r in per.items():
            print(f"{name} seed {seed}: {r['iterations']} iterations, {r['samples']} samples, {r['train_seconds']:.0f} s, "
                  f"rollout KL last {r['rollout_kl'][-1] if r['rollout_kl'] else float('nan'):.2f}"
                  + (f", stopped early: {r['stopped_early']['reason']}" if r["stopped_early"] else ""))
    return report


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="runs/fg-holistic")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--edit-prompts", type=int, default=300, help="training prompts sampled (x4) for the edits")
    p.add_argument("--heldout-fraction", type=float, default=0.2, help="share of edit prompts held out of RM training")
    p.add_argument("--rm-epochs", type=int, default=3)
    p.add_argument("--iterations", type=int, default=16)
    p.add_argument("--prompts-per-iteration", type=int, default=8)
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--lr", type=float, default=5e-5)
    p.add_argument("--eval-prompts", type=int, default=50, help="held-out test prompts of the evaluation")
    p.add_argument("--eval-samples", type=int, default=4, help="samples per test prompt (T 0.7, top-p 0.9)")
    p.add_argument("--kl-prompts", type=int, default=32, help="test prompts (x2 samples at T 1) of the KL estimate")
    p.add_argument("--json", default="", help="where the results json goes too (e.g. benchmarks/results/fg_vs_holistic_pep8.json)")
    p.add_argument("--smoke", action="store_true", help="tiny sizes: checks the benchmark runs end to end")
    args = p.parse_args()
    if args.smoke:
        args.edit_prompts, args.rm_epochs, args.iterations, args.prompts_per_iteration = 6, 1, 1, 2
        args.max_new_tokens, args.eval_prompts, args.eval_samples, args.kl_prompts = 32, 2, 2, 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()

    # 1. edits of base-model samples on training prompts, split by prompt
    edits = edits_dataset(out / "edits-data", args.edit_prompts, seed=0, max_new_tokens=args.max_new_tokens)
    files = split_pairs(edits, out / "edits-data", args.heldout_fraction)
    # 2. the two reward models and their held-out pair accuracy
    rms = {kind: learn_reward_model(out / f"rm-{kind}", spec) for kind, spec in reward_model_specs(files, args.rm_epochs).items()}
    rm_reports = {kind: rm_report(path, files) for kind, path in rms.items()}
    # 3-4. PPO per seed and method; evaluation of each final policy and of the base model
    runs, evals = train_and_evaluate(args, out, rms, rm_reports["sequence"]["train_last_std"], evaluate)
    md = table(evals, args.seeds)
    write_results(out, args, "fg_vs_holistic_pep8.py", md, t0, rm_reports, runs, evals,
                  edit_pairs={"train": rm_reports["token"]["train_pairs"], "heldout": rm_reports["token"]["heldout_pairs"]})


if __name__ == "__main__":
    main()
