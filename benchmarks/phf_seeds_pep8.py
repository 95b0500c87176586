"""PHF on the pep8 task over seeds: conditional training vs MLE vs filtering (Korbak et al.,
ICML 2023), on the current pep8 score, judged on held-out test prompts.

One scored corpus for every arm and seed (equal information): ``bench_phf_pep8``'s mix of
dedented standard-library methods (train split) and the base model's own samples on
training prompts at temperature 1, built once with ``--corpus-seed``. Its lines are
labelled by ``Pep8SegmentScorer`` with the current score's settings (pycodestyle
violations per character of the line; a document that is neither compilable nor a valid
unfinished program fails on every line), never by ``pep8-legacy``. Per seed, each arm
finetunes the shipped base model on it (``bench_phf_pep8.train_objective``: same
documents, steps, batch and learning rate, PHF's PEP8 hyperparameters); the seed changes
the order of the documents (and conditional training's dropped control tokens). The arms
differ only in what they learn from the corpus:

- ``phf-mle``: every document, plain cross-entropy;
- ``phf-filter``: only documents whose mean line score is <= 2.361e-3;
- ``phf-cond``: every document, each line after ``<|good|>`` (score 0) or ``<|bad|>``;
  evaluated sampling from ``<|good|>`` with ``<|bad|>`` blocked.

Each model, and the base model, is evaluated per seed by ``bench_phf_pep8.evaluate_model``
(the run's seed picks the evaluation samples): held-out test prompts (T 0.7, top-p 0.9, 128
tokens) scored by the task's default ``pep8`` scorer and its parts, KL to the base model
from samples at T 1, and unconditional samples.

    python benchmarks/phf_seeds_pep8.py --out runs/phf-seeds --seeds 0 1 2

Resumable: the corpus, each training run (OUT/seed-S/ARM) and each evaluation
(OUT/evals/ARM-S.json) are skipped when done. Writes OUT/results.md and results.json.
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from bench_phf_pep8 import build_corpus, evaluate_model, train_objective  # noqa: E402
from pep8_preferences import write_table  # noqa: E402
from summarize_demo_runs import interval  # noqa: E402

log = logging.getLogger("phf_seeds_pep8")

ARMS = ("phf-mle", "phf-filter", "phf-cond")
LABELS = {"phf-mle": "MLE", "phf-filter": "filtering", "phf-cond": "conditional training", "base": "base model"}
PAIRED = [("failure_rate", "failed samples"), ("mean_misalignment", "mean misalignment"),
          ("mean_misalignment_valid", "misalignment of valid samples"), ("comment_line_share", "comment lines"),
          ("kl_to_ref", "KL to the base model")]


def corpus_labels(path: Path) -> dict:
    """How the current score labels the corpus: documents, clean and syntax-failed shares,
    what filtering keeps and the share of lines conditional training marks ``<|good|>``."""
    from tokenalign.data.segments import Pep8SegmentScorer, document_score
    from tokenalign.objectives.phf import PHFSettings

    h = PHFSettings()
    texts = [json.loads(line)["text"] for line in path.read_text().splitlines() if line.strip()]
    scorer = Pep8SegmentScorer()
    scored = scorer.score_documents(texts)
    docs = [document_score(s) for s in scored]
    lines = [x for s in scored for _, _, x in s]
    return {"scorer": f"Pep8SegmentScorer, syntax_check={scorer.config.syntax_check!r} (the default pep8 score's check)",
            "documents": len(texts), "mean_document_score": sum(docs) / len(docs),
            "clean_documents": sum(d == 0 for d in docs) / len(docs),
            "syntax_failed_documents": scorer.syntax_failures / len(docs),
            "filter_threshold": h.filter_threshold, "kept_by_filter": sum(d <= h.filter_threshold for d in docs) / len(docs),
            "cond_threshold": h.cond_threshold, "good_lines": sum(x <= h.cond_threshold for x in lines) / len(lines)}


def evaluation(name: str, model_dir: str, seed: int, out: Path, args: argparse.Namespace) -> dict:
    """``evaluate_model`` of one model with the run's seed, cached in OUT/evals/NAME-SEED.json."""
    path = out / "evals" / f"{name}-{seed}.json"
    if path.is_file():
        return json.loads(path.read_text())
    t0 = time.perf_counter()
    result = evaluate_model(model_dir, argparse.Namespace(**{**vars(args), "seed": seed}))
    result["seconds"] = time.perf_counter() - t0
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=1) + "\n")
    log.info("%s-%d: evaluated in %.0f s", name, seed, result["seconds"])
    return result


def per_seed_lines(evals: dict[str, list[dict]], seeds: list[int]) -> list[str]:
    lines = []
    for name, rs in evals.items():
        for seed, r in zip(seeds, rs):
            p = r["prompted"]
            lines.append(f"- {name}-{seed}: failed {p['failure_rate']:.3f} (syntax {p['syntax_failure_rate']:.3f}), "
                         f"valid {p['mean_misalignment_valid']:.4f}, violation-free {p['violation_free_rate']:.3f}, "
                         f"comments {p['comment_line_share']:.3f}, length {p['mean_length_tokens']:.1f}, "
                         f"distinct-2 {p['distinct_2']:.3f}, KL {p.get('kl_to_ref', 0.0):.2f}, "
                         f"unconditional {r['unconditional']['mean_misalignment']:.3f}")
    return lines


def paired_lines(evals: dict[str, list[dict]]) -> list[str]:
    """Each arm minus MLE, seed by seed (same seed: same document order and evaluation samples)."""
    arms = [a for a in evals if a not in ("base", "phf-mle")]
    if "phf-mle" not in evals or not arms:
        return []
    lines = ["| paired difference (arm - MLE, per seed) | " + " | ".join(LABELS.get(a, a) for a in arms) + " |",
             "|---|" + "---|" * len(arms)]
    for key, label in PAIRED:
        cells = [interval([r["prompted"].get(key, 0.0) - m["prompted"].get(key, 0.0) for r, m in zip(evals[a], evals["phf-mle"])])
                 for a in arms]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return lines


def main(argv: list[str] | None = None) -> int:
    from tokenalign.tasks import get_task
    from tokenalign.tasks.pep8 import base_model_path

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="runs/phf-seeds")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--arms", nargs="+", default=list(ARMS), choices=ARMS)
    parser.add_argument("--corpus-seed", type=int, default=0, help="the one corpus every arm and seed trains on")
    parser.add_argument("--methods-docs", type=int, default=1500, help="standard-library methods in the corpus")
    parser.add_argument("--sample-docs", type=int, default=1000, help="base-model samples in the corpus")
    parser.add_argument("--max-tokens", type=int, default=256)
    parser.add_argument("--iterations", type=int, default=150)
    parser.add_argument("--batch", type=int, default=16, help="documents per step")
    parser.add_argument("--lr", type=float, default=2e-4)
    parser.add_argument("--eval-prompts", type=int, default=48)
    parser.add_argument("--eval-samples", type=int, default=4)
    parser.add_argument("--unconditional", type=int, default=64)
    parser.add_argument("--json", default="", help="also write the results here")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, for the test")
    args = parser.parse_args(argv)
    if args.smoke:
        args.methods_docs, args.sample_docs, args.iterations, args.batch = 12, 4, 2, 4
        args.eval_prompts, args.eval_samples, args.unconditional, args.max_tokens = 2, 1, 2, 64
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()

    # 1. the one corpus, and how the current score labels it
    corpus = build_corpus(out, argparse.Namespace(**{**vars(args), "seed": args.corpus_seed}))
    labels_path = out / "corpus_labels.json"
    if not labels_path.is_file():
        labels_path.write_text(json.dumps(corpus_labels(corpus), indent=1) + "\n")
    labels = json.loads(labels_path.read_text())
    # 2. per seed: the base model and each arm, trained then evaluated
    evals: dict[str, list[dict]] = {"base": [], **{arm: [] for arm in args.arms}}
    for seed in args.seeds:
        run_args = argparse.Namespace(**{**vars(args), "seed": seed})
        evals["base"].append(evaluation("base", str(base_model_path()), seed, out, args))
        for arm in args.arms:
            run_dir = train_objective(arm, corpus, out / f"seed-{seed}", run_args)
            evals[arm].append(evaluation(arm, str(run_dir / "model"), seed, out, args))
    # 3. the table: mean ± 95% t-interval half-width over seeds, per-seed lines, paired differences
    samples = min(args.sample_docs, len(get_task("pep8").prompts("train")))  # one sample per training prompt
    setup = (f"seeds {args.seeds}; one corpus ({labels['documents']} documents: {labels['documents'] - samples} stdlib "
             f"methods + {samples} base-model samples, corpus seed {args.corpus_seed}); {args.iterations} steps x {args.batch} "
             f"documents, lr {args.lr}, PHF's PEP8 hyperparameters; held-out test prompts: {args.eval_prompts} x "
             f"{args.eval_samples} samples (T 0.7, top-p 0.9, 128 tokens), sampled with the run's seed; "
             "mean ± 95% t-interval half-width")
    prompted = {arm: [r["prompted"] for r in evals[arm]] for arm in args.arms}
    table = write_table(out, setup, {arm: LABELS[arm] for arm in args.arms}, [r["prompted"] for r in evals["base"]],
                        prompted, vars(args))
    uncond = [interval([r["unconditional"]["mean_misalignment"] for r in rs]) for rs in evals.values()]
    table += (f"| misalignment of unconditional samples ({args.unconditional * args.eval_samples}) | " + " | ".join(uncond)
              + " |\n")
    table += "\n" + "\n".join(paired_lines(evals)) + "\n\nPer seed:\n\n" + "\n".join(per_seed_lines(evals, args.seeds)) + "\n"
    table += f"\ncorpus labels: {json.dumps(labels)}\n"
    (out / "results.md").write_text(table)
    report = {"machine": f"{platform.processor() or platform.machine()}, {platform.platform()}", "args": vars(args),
              "corpus": labels, "evaluations": evals, "seconds": time.perf_counter() - t0}
    (out / "results.json").write_text(json.dumps(report, indent=1, default=str) + "\n")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1, default=str) + "\n")
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
