"""The demo's alignment methods on held-out prompts in other styles than the standard library's.

The demo judges a method on stdlib test headers, the style the pep8 model was pretrained
on. This benchmark evaluates, for every finished run folder METHOD-SEED under RUNS_FOLDER
(benchmarks/demo_seeds.py writes them), the base model and the aligned one (align/model)
on the task's ``other-style`` prompts (third-party headers with type hints and long
Google/NumPy docstrings; tokenalign/tasks/pep8/other_style.py), with the `eval` job and
the run's own evaluation settings: its sampling (T 0.7, top-p 0.9, at most 128 new
tokens), its K samples per prompt and its seed, the same seed for base and aligned. The
base model is evaluated once per seed; the aligned model's KL to it is estimated from its
own samples at T 1 (the eval job's ``kl_to_reference``).

    python benchmarks/demo_seeds.py --out runs/pep8-seeds --methods pg pg-sequence token rloo
    python benchmarks/eval_other_style.py runs/pep8-seeds --n-prompts 48

Resumable: an evaluation whose metrics.json exists (under --out) is read, not rerun. Writes
benchmarks/results/pep8_other_style.md (mean ± half-width of the 95% t-interval over the
seeds, and the paired change after - base per seed, beside the same change on the stdlib
test prompts from the run's summary.json) and its .json with every run's numbers.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from demo_seeds import finished  # noqa: E402
from summarize_demo_runs import interval  # noqa: E402

log = logging.getLogger("eval_other_style")

MEASURES = [("mean_misalignment", "mean misalignment"), ("failure_rate", "failed samples"),
            ("syntax_failure_rate", "syntax failures"), ("mean_misalignment_valid", "misalignment of valid samples"),
            ("violation_free_rate", "violation-free"), ("comment_line_share", "comment lines"),
            ("mean_length_tokens", "mean length (tokens)"), ("kl_to_reference", "KL to the base model")]
# what the demo's judgement names (fewer failures, no worse valid-sample misalignment,
# comment share within a few points of the base's): after - base on the same seed
PAIRED = ("failure_rate", "mean_misalignment_valid", "comment_line_share")


def finished_runs(root: Path) -> list[tuple[str, int, Path]]:
    """(method, seed, folder) of every finished demo run under ``root``."""
    runs = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        method, _, seed = folder.name.rpartition("-")
        if method and seed.isdigit() and finished(folder) and (folder / "align" / "model").is_dir():
            runs.append((method, int(seed), folder))
    return runs


def evaluate(model: str, seed: int, out: Path, demo, n_prompts: int, reference: str) -> dict:
    """The eval job on the other-style prompts with the demo run's settings (read back when done)."""
    from tokenalign.jobs.eval import EvalConfig, run_eval

    if (out / "metrics.json").is_file():
        return json.loads((out / "metrics.json").read_text())
    k = demo.samples_per_prompt
    cfg = EvalConfig(model=model, task=demo.task, prompts_split="other-style", n_prompts=n_prompts,
                     samples_per_prompt=k, expected_max_k=k, reference=reference, kl_samples=reference != "none",
                     sampling=demo.sampling, out_dir=str(out), seed=seed)
    t0 = time.perf_counter()
    metrics = run_eval(cfg)
    log.info("%s: %.0f s", out, time.perf_counter() - t0)
    return metrics


def build_table(rows: list[dict]) -> str:
    """The markdown tables of ``rows`` ({method, seed, base, after}: metrics of one run)."""
    by_method: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        by_method[r["method"]].append(r)
    methods = sorted(by_method)
    bases = {r["seed"]: r["base"] for r in rows}  # one base evaluation per seed
    seeds = {m: sorted(r["seed"] for r in by_method[m]) for m in methods}
    lines = [f"seeds: {json.dumps(seeds)}", "",
             "| measure | base model | " + " | ".join(f"after {m}" for m in methods) + " |",
             "|---|---|" + "---|" * len(methods)]
    for key, label in MEASURES:
        base = [bases[s].get(key, 0.0) for s in sorted(bases)]  # the base's KL to itself is 0
        cells = [interval([r["after"][key] for r in by_method[m]]) for m in methods]
        lines.append(f"| {label} | {interval(base)} | " + " | ".join(cells) + " |")
    sides = [("other-style", lambda r: r), ("stdlib test", lambda r: r["stdlib"])] if all("stdlib" in r for r in rows) \
        else [("other-style", lambda r: r)]
    lines += ["", "Paired change, after - base on the same seed (same prompts and sampling seeds); beside it the same "
              "change on the stdlib test prompts (the run's own held-out evaluation, summary.json):", "",
              "| measure | prompts | " + " | ".join(methods) + " |", "|---|---|" + "---|" * len(methods)]
    for key in PAIRED:
        for name, side in sides:
            cells = [interval([side(r)["after"][key] - side(r)["base"][key] for r in by_method[m]]) for m in methods]
            lines.append(f"| {dict(MEASURES)[key]} | {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs_folder", help="folder of demo runs named METHOD-SEED")
    parser.add_argument("--n-prompts", type=int, default=48, help="the first N other-style prompts (0: all 176)")
    parser.add_argument("--out", default="runs/other-style-eval", help="where the evaluations are written")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: a 2-core machine shared with "
                        "other jobs samples several times faster than with 2 threads)")
    parser.add_argument("--results", default=str(Path(__file__).parent / "results" / "pep8_other_style"),
                        help="the table's path, without .md / .json")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    import torch

    torch.set_num_threads(args.threads)
    from tokenalign.config import load_config
    from tokenalign.jobs.demo import DemoConfig
    from tokenalign.tasks import get_task

    runs = finished_runs(Path(args.runs_folder))
    if not runs:
        print(f"no finished demo runs under {args.runs_folder}", file=sys.stderr)
        return 1
    out = Path(args.out)
    rows, base_model = [], {}
    for method, seed, folder in runs:
        demo = load_config(DemoConfig, folder / "config.yaml")
        model = demo.model or get_task(demo.task).model_path()
        if base_model.setdefault(seed, model) != model:
            raise SystemExit(f"{folder}: base model {model} differs from another seed-{seed} run's {base_model[seed]}")
        base = evaluate(model, seed, out / f"base-{seed}", demo, args.n_prompts, reference="none")
        after = evaluate(str(folder / "align" / "model"), seed, out / folder.name, demo, args.n_prompts, reference=model)
        keep = [key for key, _ in MEASURES]
        summary = json.loads((folder / "summary.json").read_text())
        rows.append({"method": method, "seed": seed, "base": {k: base[k] for k in keep if k in base},
                     "after": {k: after[k] for k in keep if k in after}, "prompts": after["prompts"], "samples": after["samples"],
                     "stdlib": {"base": {k: summary["align_before"].get(k, float("nan")) for k in PAIRED},
                                "after": {k: summary["align_after"].get(k, float("nan")) for k in PAIRED}}})
    table = build_table(rows)
    command = "python benchmarks/eval_other_style.py " + " ".join(argv if argv is not None else sys.argv[1:])
    header = (f"# pep8: base vs aligned on the other-style prompts\n\n`{command}`\n\n"
              f"{rows[0]['prompts']} other-style prompts x {rows[0]['samples'] // rows[0]['prompts']} samples per model "
              "(the demo's evaluation settings, the run's seed for base and aligned); mean ± half-width of the 95% "
              "t-interval over seeds.\n\n")
    results = Path(args.results)
    results.parent.mkdir(parents=True, exist_ok=True)
    results.with_suffix(".md").write_text(header + table)
    results.with_suffix(".json").write_text(json.dumps({"command": command, "runs_folder": args.runs_folder,
                                                        "n_prompts": args.n_prompts, "runs": rows}, indent=1) + "\n")
    print(header + table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
