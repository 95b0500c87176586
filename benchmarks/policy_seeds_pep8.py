"""The policy benchmark's token-level vs sequence-level table over seeds, on the current pep8
score (bench_policy_pep8.py's methods and budget, one run per method and seed).

The pairs that differ only in where one reward lands (``reward.source: blame`` spreads each
sample's gold score over the tokens pycodestyle blames, so its token rewards sum to the
sequence runs' reward):

- ``reinforce-token-blame`` vs ``reinforce-sequence`` (token REINFORCE, reward-to-go,
  whitened, one update per rollout);
- ``ppo-token-blame`` vs ``ppo-sequence`` (PPO, per-token KL coefficient 0.05);

beside ``rloo-sequence`` and ``pg-loop`` (token guidance learned from pycodestyle's
rankings, the demo's PG settings). Every run: 40 iterations x 16 training prompts x 4
samples (T 1, <= 128 tokens), lr 5e-5; held-out evaluation on 128 test prompts (T 0.7,
top-p 0.9; KL from samples at T 1) at 0, half and the whole budget.

    python benchmarks/policy_seeds_pep8.py --out runs/policy-seeds --seeds 0 1 2
    python benchmarks/policy_seeds_pep8.py --out runs/policy-seeds --seeds 1 --no-table   # one seed per process

Resumable: a finished run is skipped, an unfinished one resumes from its checkpoint.
Writes OUT/results.md (the table, paired token-minus-sequence differences at half and at
the whole budget) and OUT/results.json.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from bench_policy_pep8 import method_configs, run_method  # noqa: E402
from cdpg_vs_ppo_pep8 import eval_points  # noqa: E402
from pep8_preferences import write_table  # noqa: E402
from summarize_demo_runs import paired  # noqa: E402

log = logging.getLogger("policy_seeds_pep8")

METHODS = ("reinforce-token-blame", "reinforce-sequence", "rloo-sequence", "pg-loop", "ppo-token-blame", "ppo-sequence")
PAIRS = (("reinforce-token-blame", "reinforce-sequence"), ("ppo-token-blame", "ppo-sequence"))
PAIRED = (("failure_rate", "failed"), ("mean_misalignment_valid", "misalignment of valid samples"),
          ("violation_free_rate", "violation-free"), ("kl_to_ref", "KL"))


def bench_args(args: argparse.Namespace, seed: int) -> argparse.Namespace:
    """bench_policy_pep8's arguments at its defaults, with this run's sizes and seed."""
    return argparse.Namespace(
        iterations=args.iterations, prompts_per_iteration=args.prompts_per_iteration, samples_per_prompt=4,
        max_new_tokens=args.max_new_tokens, lr=5e-5, kl_coef=0.05, entropy_coef=0.0,
        eval_every=max(1, args.iterations // 2), eval_prompts=args.eval_prompts,
        guidance_prompts=args.guidance_prompts, pg_kl_coef=0.2, seed=seed)


def evaluation_at(folder: Path, iteration: int) -> dict:
    """The run's held-out evaluation at ``iteration`` (cdpg_vs_ppo_pep8's reading of metrics.jsonl)."""
    for point in eval_points(folder):
        if point["iteration"] == iteration:
            return point
    raise ValueError(f"{folder}/metrics.jsonl: no evaluation at iteration {iteration}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="runs/policy-seeds")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--iterations", type=int, default=40)
    parser.add_argument("--prompts-per-iteration", type=int, default=16)
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--eval-prompts", type=int, default=128)
    parser.add_argument("--guidance-prompts", type=int, default=64, help="pg-loop: fresh prompts x 4 ranked per round")
    parser.add_argument("--no-table", action="store_true", help="only run (for one process per seed)")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, for a quick check")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    if args.smoke:
        args.iterations, args.prompts_per_iteration, args.max_new_tokens = 2, 2, 24
        args.eval_prompts, args.guidance_prompts = 4, 4
    out = Path(args.out)
    runs: dict[str, list[dict]] = {m: [] for m in args.methods}
    for seed in args.seeds:
        specs = method_configs(bench_args(args, seed), out / "unused")
        for method in args.methods:
            run = run_method(method, specs[method], out / f"seed-{seed}")
            run["half"] = evaluation_at(out / f"seed-{seed}" / method, args.iterations // 2)
            runs[method].append(run)
    if args.no_table:
        return 0

    setup = (f"seeds {args.seeds}; every run {args.iterations} iterations x {args.prompts_per_iteration} training "
             f"prompts x 4 samples (T 1, <= {args.max_new_tokens} tokens), lr 5e-5 (bench_policy_pep8.py's methods); "
             f"held-out test prompts: {args.eval_prompts} x 1 sample (T 0.7, top-p 0.9; KL from samples at T 1); "
             "current pep8 score; mean ± 95% t-interval half-width over seeds")
    before = [r["before"] for r in next(iter(runs.values()))]  # every method's run at a seed starts from one base
    table = write_table(out, setup, {m: m for m in runs}, before, {m: [r["after"] for r in rs] for m, rs in runs.items()},
                        vars(args))
    lines = ["", "Paired over seeds, token minus sequence placement of the same reward "
             f"(at {args.iterations // 2} and {args.iterations} iterations):", ""]
    for token, sequence in PAIRS:
        if token in runs and sequence in runs:
            for when, pick in (("half", lambda r: r["half"]), ("end", lambda r: r["after"])):
                cells = [f"{label} {paired([pick(r)[k] for r in runs[token]], [pick(r)[k] for r in runs[sequence]])}"
                         for k, label in PAIRED]
                lines.append(f"- {token} − {sequence}, {when} of the budget: " + "; ".join(cells))
    lines += ["", "Per seed, held-out failed share at 0 / half / whole budget:", ""]
    for method, rs in runs.items():
        lines.append(f"- {method}: " + "; ".join(
            f"seed {s} {r['before']['failure_rate']:.3f} / {r['half']['failure_rate']:.3f} / {r['after']['failure_rate']:.3f}"
            for s, r in zip(args.seeds, rs)))
    extra = "\n".join(lines) + "\n"
    (out / "results.md").write_text(table + extra)
    report = json.loads((out / "results.json").read_text())
    report["runs"] = {m: [{k: v for k, v in r.items() if k != "curve"} for r in rs] for m, rs in runs.items()}
    (out / "results.json").write_text(json.dumps(report, indent=1, default=str))
    print(table + extra)
    return 0


if __name__ == "__main__":
    sys.exit(main())
