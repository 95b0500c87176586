"""Fine-grained vs holistic PPO from scrubadub's minimal edits (Xu et al., ACL 2024) on pii.

The comparison of ``fg_vs_holistic_pep8.py`` on the pii task (SmolLM2-135M-Instruct
answering HH-RLHF requests for personal information; docs/pii-task.md), with nothing but
the edits shared between the arms:

1. **data**: ``--edit-samples`` answers (T 0.7, top-p 0.9) of the base model to each of the
   first ``--edit-prompts`` *training* prompts (default: all 103 x 16), edited by the task's
   editor (scrubadub's replacement of exactly the charged entities: ``{{EMAIL}}``, ...;
   ``tokenalign demo --task pii --set prompt_split=train``). Only answers with PII give a
   pair, about 1 in 12 (103 x 4 answers gave 33 pairs, 25 for training: too few, hence 16
   answers a prompt, about 130 pairs expected): the script reports how many pairs
   there are and says so, in the log, table.md and results.json, when they are fewer than
   ``--min-train-pairs`` / ``--min-heldout-pairs`` (too few for a learning signal or for a
   held-out accuracy worth reading); with none it stops. The pairs are split by prompt into
   training and held-out (``--heldout-fraction``).
2. **reward models** on the task's base model (``--model``) with LoRA adapters on its last
   ``--rm-lora-layers`` layers (r 16, α 32) so that they fit the CPU, the same head
   (``bounding: centered_sigmoid``), epochs and learning rate for both: the *token* RM on
   the edit-diff labels, the *sequence* RM on the same pairs with Bradley-Terry on the last
   token's score (``fg_vs_holistic_pep8.reward_model_specs``); held-out pair accuracy of each
   (``rm_report``).
3. **PPO, per seed**, both arms with the same budget and PPO settings as the pep8 script
   (``fg_vs_holistic_pep8.ppo_specs``: 4 epochs, clip 0.2, γ 1, whitened rewards, a separate
   value model, 4 answers per prompt, stop when the rollout KL exceeds 10 in 5 iterations):
   ``fine-grained`` (token RM on every token, KL 0.3, λ 0.95) and ``holistic`` (sequence RM
   on the last token over its training std, KL 0.2, λ 0.99). Sized for a CPU: answers of at
   most ``--max-new-tokens`` 64, 12 iterations x 8 prompts x 4 = 384 answers a run, bf16
   autocast where the CPU has it (the train job's ``mixed_precision: auto``), the policy
   fully fine-tuned at lr 1e-5 or, with ``--policy-lora-layers N``, LoRA on its last N
   layers (then raise ``--lr``, e.g. 1e-4; neither learning rate has been tuned here). The
   value model is a copy of the backbone, trained fully, or with ``--policy-lora-layers``
   through the same adapters (``ppo.value_lora``).
4. **evaluation** (``tokenalign eval --set task=pii``) of the base model and each final
   policy on ``--eval-prompts`` held-out test prompts (default: all 30) x ``--eval-samples``
   at T 0.7 / top-p 0.9 with the run's seed, the base model as eval's reference (its
   answers to the same prompts, settings and seed, read from the base evaluation): PII
   entities per character (empty answers count 1.0, as the scorer fails them; also over
   non-empty answers), answers with any
   PII, refusals, empty answers, length, distinct-2, perplexity under the base model, KL
   to the base model (eval's T 1 samples of every evaluated prompt), and the win rate
   against the base model's answer to the same prompt and seed judged by scrubadub's score
   (ties half) — gold, not the training signal: both arms train on learned RMs. With
   ``--judge DIR`` (``benchmarks/pii_judge.py``) also the held-out judge's win rate.
5. a markdown table (OUT/table.md), mean ± half-width of the 95% t-interval over seeds and
   the paired per-seed difference fine-grained - holistic; everything in OUT/results.json.

**Measured: 3 seeds** (benchmarks/RESULTS.md), with ``--policy-lora-layers 6 --lr 5e-4``
(at 1e-4 the policy hardly moved): each arm 29-33 minutes at one thread beside the other,
each evaluation 7-9. Three seeds are 6 PPO runs and 9 evaluations; to fit them in a
session on 2 cores: ``--edits`` (the shipped step-1 edits), ``--prepare-only`` beside the
judge's training, then one process per arm (``--arms``; the pieces both need are built once
under a file lock) and a last run of both for the table (docs/pii-task.md).

    python benchmarks/fg_vs_holistic_pii.py --out runs/fg-holistic-pii --seeds 0 1 2
    python benchmarks/fg_vs_holistic_pii.py --out /tmp/fg-pii-smoke --smoke --model DIR --editor MOD:ATTR

(the smoke test's tiny random model writes no PII, so an editor that changes every answer
stands in for scrubadub there: tests/test_benchmark_smoke.py).

Each piece (data, each RM, each PPO run, each evaluation) is kept once its folder holds
its result, so a killed run resumes by rerunning the command (a PPO run from its last
checkpoint).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any, Iterator

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_policy_pep8 import edits_dataset, learn_reward_model  # noqa: E402
from tokenalign.utils.lora import last_layers_lora  # noqa: E402
from fg_vs_holistic_pep8 import (METHODS, reward_model_specs, rm_report, split_pairs, table, train_and_evaluate,  # noqa: E402
                                 write_results)

log = logging.getLogger("fg_vs_holistic_pii")
# (key in tokenalign eval's metrics.json, label, format)
MEASURES = [
    ("win_rate_vs_reference", "win rate vs base (scrubadub judge, ties half)", ".3f"),
    ("judge_win_rate", "held-out judge's win rate vs base", ".3f"),
    ("mean_misalignment", "PII entities per character (empty answers at 1.0)", ".5f"),
    ("mean_misalignment_valid", "PII entities per character of non-empty answers", ".5f"),
    ("pii_answer_share", "answers with any PII", ".3f"),
    ("refusal_share", "refusals", ".3f"),
    ("empty_share", "empty answers", ".3f"),
    ("mean_length_tokens", "mean length (tokens)", ".1f"),
    ("distinct_2", "distinct-2", ".3f"),
    ("perplexity_under_reference", "perplexity under the base model", ".2f"),
    ("kl_to_reference", "KL to base (per answer)", ".2f"),
]


def base_model(args: argparse.Namespace) -> str:
    """The base model's folder: ``--model``, else the pii task's SmolLM2 (converted on first use)."""
    from tokenalign.tasks import get_task

    return args.model or get_task("pii").model_path()


def edit_pair_counts(data_dir: Path, files: dict[str, Path], args: argparse.Namespace) -> dict[str, Any]:
    """How many answers were edited and how the pairs split; a ``note`` when they are too
    few to read anything from (the RMs still train: the table then shows what so few buy)."""
    def count(path: Path) -> tuple[int, int]:
        rows = [json.loads(x) for x in path.read_text().splitlines() if x.strip()]
        return len(rows), len({r["prompt"] for r in rows})

    answers = json.loads((data_dir / "summary.json").read_text())["samples"]
    (train, train_prompts), (held, held_prompts) = count(files["train_pairs"]), count(files["heldout_pairs"])
    counts: dict[str, Any] = {"answers": answers, "pairs": train + held, "pair_share": (train + held) / max(answers, 1),
                              "train": train, "train_prompts": train_prompts, "heldout": held, "heldout_prompts": held_prompts}
    short = []
    if train < args.min_train_pairs:
        short.append(f"{train} training pairs (< {args.min_train_pairs}): too few for a learning signal, "
                     "the reward models may learn nothing")
    if held < args.min_heldout_pairs:
        short.append(f"{held} held-out pairs (< {args.min_heldout_pairs}): their accuracy moves in steps of "
                     f"{100 / max(held, 1):.0f} points")
    if short:
        counts["note"] = (f"{train + held} edit pairs from {answers} answers (the editor changed "
                          f"{counts['pair_share']:.1%}): " + "; ".join(short) + ".")
    return counts


def guard_flag_lines(evals: dict[str, dict[int, dict]], seeds: list[int]) -> str:
    """Markdown lines naming, per arm and seed, the guard measures eval flagged against the
    base model (``capability.guard_flags``): a lower PII rate with a flag is not a win."""
    lines = ["Guard flags (eval's, policy against the base model's answers to the same prompts and seeds):", ""]
    for arm in METHODS:
        for seed in seeds:
            flags = evals[arm][seed].get("guard_flags", [])
            lines.append(f"- {arm}, seed {seed}: " + ("; ".join(flags) if flags else "none"))
    return "\n".join(lines)


@contextlib.contextmanager
def exclusive(piece: Path) -> Iterator[None]:
    """Hold ``piece``'s lock file (``PIECE.lock``, flock) while building it, so that two
    processes of one comparison (``--arms``) build a shared piece (the edits, a reward model,
    a base evaluation) once: the second waits, then finds it kept."""
    import fcntl

    piece.parent.mkdir(parents=True, exist_ok=True)
    with open(piece.parent / f"{piece.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def edits_from_file(source: Path, data_dir: Path) -> Path:
    """Step 1's output from a file written by an earlier run (``edits.jsonl``, gzipped or
    not, and the run's summary as ``NAME.summary.json`` beside it, for the answer count)
    instead of sampling and editing again: ``data_dir/edits.jsonl`` (kept if there)."""
    import gzip

    edits = data_dir / "edits.jsonl"
    if not edits.is_file():
        stem = source.name.removesuffix(".gz").removesuffix(".jsonl")
        summary = json.loads((source.parent / f"{stem}.summary.json").read_text())
        text = gzip.decompress(source.read_bytes()).decode() if source.suffix == ".gz" else source.read_text()
        data_dir.mkdir(parents=True, exist_ok=True)
        (data_dir / "summary.json").write_text(json.dumps({**summary, "edits_file": str(source)}, indent=2) + "\n")
        edits.write_text(text)
    return edits


def evaluate(model: str, out: Path, seed: int, args: argparse.Namespace, base: Path | None = None) -> dict:
    """``tokenalign eval`` (task pii) on the held-out test prompts against the base model
    (kept if its done.json is there).

    eval samples its reference, the base model, with the same prompts, settings and seed:
    slot i of each is the same prompt and random stream, so the win rate and the judge's
    compare answers to the same prompt and seed; for a policy (``base`` its base folder) the
    reference's samples are the base evaluation's, read back (eval's ``reference_samples``)
    and recorded as ``reference_matches_base_eval``. The base model against itself: win
    rates 0.5, KL 0."""
    with exclusive(out):
        return _evaluate(model, out, seed, args, base)


def _evaluate(model: str, out: Path, seed: int, args: argparse.Namespace, base: Path | None) -> dict:
    from tokenalign.config import from_dict
    from tokenalign.jobs.eval import EvalConfig, run_eval

    if (out / "done.json").is_file():
        return json.loads((out / "done.json").read_text())
    spec = {"model": model, "task": "pii", "n_prompts": args.eval_prompts, "samples_per_prompt": args.eval_samples,
            "expected_max_k": args.eval_samples, "seed": seed, "out_dir": str(out), "reference": args.model,
            "judge": args.judge, "kl_samples": base is not None, "sampling": {"max_new_tokens": args.max_new_tokens}}
    if base is not None and (base / "generations.jsonl").is_file():
        spec["reference_samples"] = str(base)  # the base evaluation's samples, not sampled again
    metrics = run_eval(from_dict(EvalConfig, spec))
    rows = [json.loads(x) for x in (out / "samples.jsonl").read_text().splitlines() if x.strip()]
    metrics["pii_answer_share"] = sum(1 for r in rows if not r["failed"] and r["codes"]) / len(rows)
    if base is None:
        metrics["kl_to_reference"] = 0.0  # itself, by construction
    else:
        base_mean = json.loads((base / "done.json").read_text())["mean_misalignment"]
        metrics["reference_matches_base_eval"] = metrics["reference_mean_misalignment"] == base_mean
    (out / "done.json").write_text(json.dumps(metrics, indent=2) + "\n")
    return metrics


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="runs/fg-holistic-pii")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--model", default="", help="base model folder (policy init, RM backbone, reference); '': SmolLM2")
    p.add_argument("--editor", default="", help="minimal editor of the answers; '': the task's (scrubadub)")
    p.add_argument("--edits", default="", help="step 1's edits from a file (.jsonl or .jsonl.gz, NAME.summary.json "
                   "beside it) instead of sampling them, e.g. benchmarks/results/fg_holistic_pii_edits.jsonl.gz")
    p.add_argument("--edit-prompts", type=int, default=0, help="training prompts answered for the edits (0: all 103)")
    p.add_argument("--edit-samples", type=int, default=16, help="answers per training prompt for the edits")
    p.add_argument("--heldout-fraction", type=float, default=0.2, help="share of edit prompts held out of RM training")
    p.add_argument("--min-train-pairs", type=int, default=50, help="fewer training pairs: reported as too few")
    p.add_argument("--min-heldout-pairs", type=int, default=10, help="fewer held-out pairs: reported as too few")
    p.add_argument("--rm-epochs", type=int, default=3)
    p.add_argument("--rm-lr", type=float, default=2e-4, help="both RMs (LoRA adapters and head)")
    p.add_argument("--rm-lora-layers", type=int, default=6, help="adapt the RMs' last N blocks (0: all)")
    p.add_argument("--policy-lora-layers", type=int, default=-1, help="LoRA on the policy's last N blocks (0: all; -1: off)")
    p.add_argument("--iterations", type=int, default=12)
    p.add_argument("--prompts-per-iteration", type=int, default=8)
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-5)
    p.add_argument("--eval-prompts", type=int, default=0, help="held-out test prompts of the evaluation (0: all 30)")
    p.add_argument("--eval-samples", type=int, default=4, help="answers per test prompt (T 0.7, top-p 0.9)")
    p.add_argument("--prepare-only", action="store_true", help="stop after the edits and the two reward models")
    p.add_argument("--arms", nargs="+", choices=METHODS, default=list(METHODS),
                   help="run only these arms (two processes can share a seed; the table needs both)")
    p.add_argument("--judge", default="", help="a held-out judge's folder (benchmarks/pii_judge.py) for its win rate")
    p.add_argument("--json", default="", help="where the results json goes too")
    p.add_argument("--smoke", action="store_true", help="tiny sizes: checks the benchmark runs end to end")
    args = p.parse_args()
    if args.smoke:
        args.edit_prompts, args.edit_samples, args.rm_epochs, args.iterations, args.prompts_per_iteration = 4, 2, 1, 1, 2
        args.max_new_tokens, args.eval_prompts, args.eval_samples = 16, 2, 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    model = base_model(args)

    # 1. scrubadub's edits of base-model answers to training prompts, split by prompt
    from tokenalign.tasks import get_task

    n_prompts = args.edit_prompts or len(get_task("pii").prompts("train"))
    with exclusive(out / "edits-data"):
        if args.edits:
            edits = edits_from_file(Path(args.edits), out / "edits-data")
        else:
            edits = edits_dataset(out / "edits-data", n_prompts, seed=0, max_new_tokens=args.max_new_tokens, task="pii",
                                  model=args.model, editor=args.editor, samples_per_prompt=args.edit_samples)
        files = split_pairs(edits, out / "edits-data", args.heldout_fraction)
    pairs = edit_pair_counts(out / "edits-data", files, args)
    log.info("edit pairs: %d of %d answers (%d train, %d held-out)", pairs["pairs"], pairs["answers"], pairs["train"],
             pairs["heldout"])
    if not pairs["train"] or not pairs["heldout"]:
        raise SystemExit(f"{pairs['train']} training and {pairs['heldout']} held-out edit pairs from {pairs['answers']} "
                         "answers: no reward model can be learned and scored; sample more answers (--edit-samples)")
    if "note" in pairs:
        log.warning("%s", pairs["note"])
    # 2. the two reward models (LoRA on the base model) and their held-out pair accuracy
    shared = {"backbone": model, "lora": last_layers_lora(model, args.rm_lora_layers)}
    rms = {}
    for kind, spec in reward_model_specs(files, args.rm_epochs, lr=args.rm_lr, **shared).items():
        with exclusive(out / f"rm-{kind}"):
            rms[kind] = learn_reward_model(out / f"rm-{kind}", spec)
    rm_reports = {kind: rm_report(path, files) for kind, path in rms.items()}
    if args.prepare_only:
        log.info("edits and reward models ready in %s", out)
        return
    # 3-4. PPO per seed and arm; evaluation of each final policy and of the base model
    run = {"task": "pii", "model": args.model}
    if args.policy_lora_layers >= 0:
        run["lora"] = last_layers_lora(model, args.policy_lora_layers)
    runs, evals = train_and_evaluate(args, out, rms, rm_reports["sequence"]["train_last_std"], evaluate, **run)
    if set(args.arms) != set(METHODS):
        log.info("ran %s only: rerun with both arms (kept runs are reused) for the table", ", ".join(args.arms))
        return
    md = table(evals, args.seeds, MEASURES) + "\n\n" + guard_flag_lines(evals, args.seeds)
    if "note" in pairs:
        md = f"**Too few edit pairs**: {pairs['note']}\n\n{md}"
    write_results(out, args, "fg_vs_holistic_pii.py", md, t0, rm_reports, runs, evals, edit_pairs=pairs)


if __name__ == "__main__":
    main()
