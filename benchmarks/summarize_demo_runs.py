"""Mean and 95% t-interval over seeds of `tokenalign demo` runs, per alignment method.

    for seed in 0 1 2; do for m in pg token rloo; do
      tokenalign demo --out runs/demo-seeds/$m-$seed --set seed=$seed --set align.method=$m
    done; done
    python benchmarks/summarize_demo_runs.py runs/demo-seeds
    python benchmarks/summarize_demo_runs.py runs/pii-seeds --pairs pg:pg-sequence token:rloo

The same for the pii task (`tokenalign demo --task pii ...`). Each run folder is named METHOD-SEED; the table gives, per method, the held-out
measures before and after alignment (the run's summary.json; the length from the align
run's held-out evaluation, align/summary.json, for every run alike) as mean ± half-width
of the 95% t-interval over the seeds. Below it, each method's change from the base model,
paired per seed (a seed samples the base and the aligned model with the same prompts and
draws, so the pairing removes the seed's share of the noise), and with ``--pairs A:B`` the
paired difference A − B after alignment over the seeds both have.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from collections import defaultdict
from pathlib import Path

T95 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262}  # two-sided, df
MEASURES = [("mean_misalignment", "mean misalignment"), ("failure_rate", "failed samples"),
            ("syntax_failure_rate", "syntax failures"), ("violation_free_rate", "violation-free"),
            ("mean_misalignment_valid", "misalignment of valid samples"), ("comment_line_share", "comment lines"),
            ("empty_rate", "empty answers"), ("refusal_share", "refusals"), ("distinct_2", "distinct-2"),
            ("perplexity_under_ref", "perplexity under the base model"),
            ("mean_length_tokens", "mean length (tokens; align run's eval)"), ("kl", "KL to the base model"),
            ("judge_win_rate", "judge: after preferred to before")]


def mean_and_halfwidth(values: list[float]) -> tuple[float, float]:
    """The mean and the half-width of its two-sided 95% t-interval (nan for one value)."""
    mean = statistics.mean(values)
    if len(values) < 2:
        return mean, float("nan")
    return mean, T95[len(values) - 1] * statistics.stdev(values) / math.sqrt(len(values))


def interval(values: list[float]) -> str:
    """``mean ± half-width``; a nan (e.g. no valid sample to average) is left out and said."""
    finite = [v for v in values if not math.isnan(v)]
    note = f" ({len(finite)} of {len(values)} seeds)" if len(finite) < len(values) else ""
    if not finite:
        return "nan"
    if len(finite) < 2:
        return f"{finite[0]:.4g}" + (note or " (1 seed)")
    mean, half = mean_and_halfwidth(finite)
    return f"{mean:.4g} ± {half:.2g}{note}"


def paired(a: list[float], b: list[float]) -> str:
    """Mean of the per-seed differences a - b ± its 95% t-interval half-width."""
    mean, half = mean_and_halfwidth([x - y for x, y in zip(a, b)])
    return f"{mean:+.3g} ± {half:.2g}"


PAIRED = ("mean_misalignment", "violation_free_rate", "mean_misalignment_valid", "refusal_share", "empty_rate",
          "perplexity_under_ref", "mean_length_tokens")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("root", nargs="?", default="runs/demo-seeds", help="folder of METHOD-SEED run folders")
    parser.add_argument("--pairs", nargs="*", default=[], help="A:B method pairs: paired A - B after alignment")
    args = parser.parse_args(argv)
    runs: dict[str, list[dict]] = defaultdict(list)
    for folder in sorted(Path(args.root).iterdir()):
        summary = folder / "summary.json"
        if not summary.is_file():
            continue
        method, _, seed = folder.name.rpartition("-")
        s = json.loads(summary.read_text())
        if "align_after" not in s:
            continue  # a run still aligning
        align = json.loads((folder / "align" / "summary.json").read_text())
        before, after = dict(s["align_before"]), dict(s["align_after"])
        for side, name in ((before, "before"), (after, "after")):  # one source for every run: the align run's eval
            side["mean_length_tokens"] = align[name]["mean_length_tokens"]
        before["kl"], after["kl"] = 0.0, s["align_kl_to_ref"]
        if "align_judge_win_rate" in s:
            before["judge_win_rate"], after["judge_win_rate"] = 0.5, s["align_judge_win_rate"]
        runs[method].append({"seed": int(seed), "before": before, "after": after})
    methods = sorted(runs)
    seeds = {m: sorted(r["seed"] for r in runs[m]) for m in methods}
    print(f"seeds: {json.dumps(seeds)}")
    print("| measure | base model | " + " | ".join(f"after {m}" for m in methods) + " |")
    print("|---|---|" + "---|" * len(methods))
    for key, label in MEASURES:
        if not all(key in r["before"] and key in r["after"] for m in methods for r in runs[m]):
            continue  # a measure this task's runs do not have (pep8's comment lines, pii's refusals)
        base = [r["before"][key] for r in runs[methods[0]]]
        cells = [interval([r["after"][key] for r in runs[m]]) for m in methods]
        print(f"| {label} | {interval(base)} | " + " | ".join(cells) + " |")
    labels = dict(MEASURES)
    shown = [k for k in PAIRED if all(k in r["after"] and k in r["before"] for m in methods for r in runs[m])]
    print("\nAfter − before, paired per seed:\n")
    for m in methods:
        parts = [f"{labels[k]} {paired([r['after'][k] for r in runs[m]], [r['before'][k] for r in runs[m]])}" for k in shown]
        print(f"- {m}: " + "; ".join(parts))
    for pair in args.pairs:
        a, _, b = pair.partition(":")
        by_seed = {m: {r["seed"]: r["after"] for r in runs.get(m, [])} for m in (a, b)}
        common = sorted(set(by_seed[a]) & set(by_seed[b]))
        if len(common) < 2:
            print(f"\n{a} − {b}: fewer than 2 seeds in common ({common})")
            continue
        parts = [f"{labels[k]} {paired([by_seed[a][i][k] for i in common], [by_seed[b][i][k] for i in common])}"
                 for k in (*shown, "kl") if all(k in by_seed[m][i] for m in (a, b) for i in common)]
        print(f"\n{a} − {b}, paired over seeds {common}: " + "; ".join(parts))


if __name__ == "__main__":
    main()
