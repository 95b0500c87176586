"""PG's supervised-data objective on the pep8 task: guidance-weighted MLE against plain MLE
on the same reference completions (Yang et al., NeurIPS 2023, their sec. 3.2 setting).

The reference completions are the corpus's own function bodies for the task's training
prompts (validation-split files of the stdlib, never pretrained on; 616 rows). Both arms
train the shipped base model on the same rows in the same seeded order with the same
optimiser; the only difference is the per-token weight: ``w_t = r_t / Σ r`` from a token
guidance r_φ learned from rankings of the base model's own samples on training prompts
(``wmle.weights: guidance``), or ``w_t = 1 / L`` (``wmle.weights: uniform``, plain MLE with
the same per-sequence normalisation). Both are judged on the held-out test prompts by the
same evaluation (pycodestyle's score and its parts, comment share, length, KL).

    python benchmarks/wmle_vs_mle_pep8.py --out runs/wmle-vs-mle --seeds 0 1 2

Steps, each skipped when its output exists (resumable): the reference rows; a demo run on
training prompts (align off) for the ranked samples; ``tokenalign reward`` on them (the
demo's guidance settings: avg aggregator, bounded head so weights are positive, 2 epochs
at lr 1e-4); then per seed the two ``tokenalign train`` runs. Writes OUT/results.md.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from pep8_preferences import finished, ranked_base_samples, sets, tokenalign, write_table  # noqa: E402

log = logging.getLogger("wmle_vs_mle_pep8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="runs/wmle-vs-mle")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--iterations", type=int, default=40, help="optimizer steps of each arm")
    parser.add_argument("--rows-per-iteration", type=int, default=16)
    parser.add_argument("--lr", type=float, default=5e-5)
    parser.add_argument("--ranked-prompts", type=int, default=128, help="training prompts x 4 samples ranked for r_φ")
    parser.add_argument("--eval-prompts", type=int, default=48)
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, for the test")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    if args.smoke:
        args.iterations, args.rows_per_iteration, args.ranked_prompts, args.eval_prompts = 2, 2, 4, 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    data = out / "reference_bodies.jsonl"
    if not data.is_file():
        from tokenalign.jobs.demo_align import write_references
        from tokenalign.tasks import get_task

        log.info("%d reference completions -> %s", write_references(get_task("pep8"), data)[1], data)
    ranked = ranked_base_samples(out / "ranked", args.ranked_prompts, args.smoke)
    rm = out / "guidance"
    if not (rm / "model").is_dir():
        tokenalign("reward", *sets(out_dir=rm, data__train=ranked, data__format="ranked", learn__aggregator="avg",
                                   learn__epochs=2, learn__lr=1e-4, head__bounding="bounded",
                                   head__hidden_size=64 if args.smoke else 2048))
    common = dict(objective="wmle", wmle__data=data, iterations=args.iterations, prompts_per_iteration=args.rows_per_iteration,
                  lr=args.lr, reward__source="token_model", reward__token_model=rm / "model", eval__every=args.iterations,
                  eval__prompts=args.eval_prompts, eval__samples_per_prompt=4, sampling__max_new_tokens=128)
    results: dict[str, list[dict]] = {"uniform": [], "guidance": []}
    before: list[dict] = []
    for seed in args.seeds:
        for weights in results:
            folder = out / f"{weights}-{seed}"
            if not finished(folder):
                tokenalign("train", *sets(out_dir=folder, seed=seed, wmle__weights=weights, **common))
            summary = json.loads((folder / "summary.json").read_text())
            results[weights].append(summary["after"])
            before.append(summary["before"])
    setup = (f"seeds {args.seeds}; {args.iterations} steps x {args.rows_per_iteration} rows, lr {args.lr}; held-out test "
             f"prompts: {args.eval_prompts} x 4 samples (T 0.7, top-p 0.9); mean ± 95% t-interval half-width")
    table = write_table(out, setup, {"uniform": "plain MLE (w = 1/L)", "guidance": "guidance-weighted MLE (w = r/Σr)"},
                        before, results, vars(args))
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
