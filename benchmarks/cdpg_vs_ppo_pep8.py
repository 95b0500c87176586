"""CDPG against PPO on the same constraint, at matched KL to the base model, on the pep8 task
(Korbak et al.: CDPG against RL with a KL penalty on the same binary reward).

Both arms see one signal, the constraint b(y) = 1 iff the sample compiles and pycodestyle
finds no violation (the current default score):

- ``cdpg``: conditional DPG toward π0(y|x) b(y) (SPEC 3.3: a per-prompt Z_c from the K
  samples of each prompt; no KL coefficient), bench_policy_pep8.py's ``cdpg`` method;
- ``ppo``: bench_policy_pep8.py's ``ppo-sequence`` method with b as its reward
  (``reward.source: constraint``: 1 or 0 on the last token) and its per-token KL penalty.

Both run in fp32 with the same prompts, budget and learning rate. Per seed, CDPG runs first
and is evaluated at the end. PPO then runs one iteration per invocation, each evaluated,
until its held-out KL reaches CDPG's final held-out KL (or ``--match-max-iterations``), and
then on to the end of the budget (``--allow-config-change``: only the evaluation interval
changes; every random choice derives from (seed, iteration), so the training trajectory is
the uninterrupted run's). PPO is reported at the evaluation whose held-out KL is closest to
CDPG's ("PPO at matched KL": one of the two that bracket it) and at the end of the same
budget, for context. Every evaluation is on held-out test prompts (T 0.7, top-p 0.9; the KL
from samples at T 1).

    python benchmarks/cdpg_vs_ppo_pep8.py --out runs/cdpg-ppo --seeds 0 1 2

Resumable: a run folder whose summary says finished is skipped. Writes OUT/results.md
(the table, then per-seed lines) and OUT/results.json.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from bench_policy_pep8 import method_configs  # noqa: E402
from pep8_preferences import finished, tokenalign, write_table  # noqa: E402
from summarize_demo_runs import interval, paired  # noqa: E402

log = logging.getLogger("cdpg_vs_ppo_pep8")

LABELS = {"cdpg": "CDPG toward π0·b", "ppo-matched": "PPO on b, evaluation closest to CDPG's KL",
          "ppo-end": "PPO on b, end of budget"}


def flat_sets(spec: dict, prefix: str = "") -> list[str]:
    """``--set a.b=v`` arguments of a nested config dict."""
    out: list[str] = []
    for key, value in spec.items():
        if isinstance(value, dict):
            out += flat_sets(value, f"{prefix}{key}.")
        else:
            out += ["--set", f"{prefix}{key}={str(value).lower() if isinstance(value, bool) else value}"]
    return out


def arm_specs(args: argparse.Namespace, seed: int) -> dict[str, dict]:
    """The two arms' train configs: bench_policy_pep8's ``cdpg`` and ``ppo-sequence``, with
    b as PPO's reward, fp32 both, 4 evaluation samples per held-out prompt."""
    bench = argparse.Namespace(
        iterations=args.iterations, prompts_per_iteration=args.prompts_per_iteration, samples_per_prompt=4,
        max_new_tokens=args.max_new_tokens, eval_every=args.iterations, eval_prompts=args.eval_prompts, seed=seed,
        lr=args.lr, kl_coef=args.kl_coef, entropy_coef=0.0, pg_kl_coef=0.2, guidance_prompts=64)
    specs = method_configs(bench, Path("unused"))
    cdpg, ppo = specs["cdpg"], specs["ppo-sequence"]
    for spec in (cdpg, ppo):
        del spec["kind"]
        spec["mixed_precision"] = "no"
        spec["eval"]["samples_per_prompt"] = 4
    ppo["reward"] = {"source": "constraint", "placement": "sequence"}
    if args.cdpg_iterations:  # CDPG moves ~0.05 nats an iteration: a longer run reaches PPO's first-step KL
        cdpg["iterations"] = cdpg["eval"]["every"] = args.cdpg_iterations
    return {"cdpg": cdpg, "ppo": ppo}


def eval_points(folder: Path) -> list[dict]:
    """The run's held-out evaluations after iteration 0 by iteration (a repeated iteration,
    from a resumed invocation, keeps its last), each with its iteration and samples seen."""
    metrics = folder / "metrics.jsonl"
    points: dict[int, dict] = {}
    for line in metrics.read_text().splitlines() if metrics.is_file() else []:
        row = json.loads(line) if line.strip() else {}
        if "eval_kl_to_ref" in row and row.get("iteration", 0) > 0:
            point = {k[len("eval_"):]: v for k, v in row.items() if k.startswith("eval_")}
            points[row["iteration"]] = {**point, "iteration": row["iteration"], "samples": row.get("samples_seen")}
    return [points[i] for i in sorted(points)]


def run_ppo_matched(spec: dict, folder: Path, target_kl: float, max_match: int) -> None:
    """PPO evaluated after each iteration until its held-out KL reaches ``target_kl`` (or
    ``max_match`` iterations), then trained on to the end of its budget, evaluated there."""
    iterations = spec["iterations"]
    while not finished(folder):
        points = eval_points(folder)
        if points and (points[-1]["kl_to_ref"] >= target_kl or points[-1]["iteration"] >= max_match):
            break
        tokenalign("train", *flat_sets({**spec, "eval": {**spec["eval"], "every": 1}, "stop_after_iterations": 1,
                                        "out_dir": folder}))
    if not finished(folder):
        tokenalign("train", *flat_sets({**spec, "eval": {**spec["eval"], "every": iterations}, "stop_after_iterations": 0,
                                        "out_dir": folder}), "--allow-config-change")


def closest(points: list[dict], kl: float) -> dict:
    return min(points, key=lambda p: abs(p["kl_to_ref"] - kl))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="runs/cdpg-ppo")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--iterations", type=int, default=40, help="x prompts-per-iteration x 4 samples, both arms")
    parser.add_argument("--cdpg-iterations", type=int, default=0,
                        help="CDPG's own budget (0: --iterations); more, so that its KL reaches PPO's after one update")
    parser.add_argument("--prompts-per-iteration", type=int, default=16)
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--lr", type=float, default=5e-5)
    parser.add_argument("--kl-coef", type=float, default=0.05, help="PPO's per-token KL coefficient")
    parser.add_argument("--match-max-iterations", type=int, default=0,
                        help="PPO is evaluated after each of at most this many iterations (0: half the budget)")
    parser.add_argument("--eval-prompts", type=int, default=48, help="held-out test prompts x 4 samples")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, for a quick check")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    if args.smoke:
        args.iterations, args.prompts_per_iteration, args.max_new_tokens, args.eval_prompts = 2, 2, 24, 2
    max_match = args.match_max_iterations or max(1, args.iterations // 2)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    results: dict[str, list[dict]] = {arm: [] for arm in LABELS}
    before: list[dict] = []
    per_seed = []
    for seed in args.seeds:
        specs = arm_specs(args, seed)
        folders = {arm: out / f"{arm}-{seed}" for arm in specs}
        if not finished(folders["cdpg"]):  # CDPG first: its KL is the one PPO is matched to
            tokenalign("train", *flat_sets({**specs["cdpg"], "out_dir": folders["cdpg"]}))
        cdpg = json.loads((folders["cdpg"] / "summary.json").read_text())
        run_ppo_matched(specs["ppo"], folders["ppo"], cdpg["after"]["kl_to_ref"], max_match)
        ppo = json.loads((folders["ppo"] / "summary.json").read_text())
        points = eval_points(folders["ppo"])
        match = closest(points, cdpg["after"]["kl_to_ref"])
        results["cdpg"].append(cdpg["after"])
        results["ppo-matched"].append(match)
        results["ppo-end"].append(ppo["after"])
        before += [cdpg["before"], ppo["before"]]
        per_seed.append({"seed": seed, "cdpg_kl": cdpg["after"]["kl_to_ref"], "ppo_matched_iteration": match["iteration"],
                         "ppo_points": points})

    budget = (f"both arms {args.iterations}" if not args.cdpg_iterations else
              f"CDPG {args.cdpg_iterations}, PPO {args.iterations}")
    setup = (f"seeds {args.seeds}; {budget} iterations x {args.prompts_per_iteration} training prompts "
             f"x 4 samples (T 1, <= {args.max_new_tokens} tokens), lr {args.lr}, fp32; signal b(y) = 1 iff the sample "
             f"compiles and has no PEP8 violation (the current default score); CDPG toward π0·b (per-prompt Z_c, no KL "
             f"coefficient); PPO with reward b on the last token and per-token KL coefficient {args.kl_coef}, evaluated "
             f"after each iteration until its held-out KL reached CDPG's (at most {max_match}), reported at the "
             f"evaluation whose held-out KL is closest to CDPG's (per seed) and at the end of the budget; held-out "
             f"test prompts: {args.eval_prompts} x 4 samples (T 0.7, top-p 0.9; KL from samples at T 1); mean ± 95% "
             "t-interval half-width over seeds")
    table = write_table(out, setup, LABELS, before, results, vars(args))
    col = {arm: {k: [r[k] for r in rs] for k in ("violation_free_rate", "kl_to_ref", "mean_misalignment")}
           for arm, rs in results.items()}
    lines = ["", "Paired over seeds (CDPG minus PPO at its evaluation closest to CDPG's KL): violation-free "
             f"{paired(col['cdpg']['violation_free_rate'], col['ppo-matched']['violation_free_rate'])}, KL "
             f"{paired(col['cdpg']['kl_to_ref'], col['ppo-matched']['kl_to_ref'])}, mean misalignment "
             f"{paired(col['cdpg']['mean_misalignment'], col['ppo-matched']['mean_misalignment'])}.", "",
             "PPO's evaluation closest to CDPG's KL: iteration "
             + ", ".join(str(s["ppo_matched_iteration"]) for s in per_seed)
             + f" (seeds {args.seeds}); its samples seen: "
             + interval([float(r["samples"]) for r in results["ppo-matched"]]) + ".", "",
             "Per seed (violation-free / KL / mean misalignment / failed / length):", ""]
    for s, c, m, e in zip(per_seed, results["cdpg"], results["ppo-matched"], results["ppo-end"]):
        cells = [f"{label} {r['violation_free_rate']:.3f} / {r['kl_to_ref']:.2f} / {r['mean_misalignment']:.3f} / "
                 f"{r['failure_rate']:.3f} / {r['mean_length_tokens']:.0f}"
                 for label, r in (("CDPG", c), (f"PPO@it{m['iteration']}", m), ("PPO end", e))]
        lines.append(f"- seed {s['seed']}: " + "; ".join(cells))
        lines.append("  - PPO's evaluations (iteration: KL, violation-free): "
                     + ", ".join(f"{p['iteration']}: {p['kl_to_ref']:.2f}, {p['violation_free_rate']:.3f}"
                                 for p in s["ppo_points"]))
    extra = "\n".join(lines) + "\n"
    (out / "results.md").write_text(table + extra)
    report = json.loads((out / "results.json").read_text())
    report["per_seed"] = per_seed
    (out / "results.json").write_text(json.dumps(report, indent=1, default=str))
    print(table + extra)
    return 0


if __name__ == "__main__":
    sys.exit(main())
