"""PHF objectives on the pep8 task: finetune the shipped base model on a scored corpus.

The corpus mixes what PHF's pretraining data mixes, good and bad code: dedented methods of
the standard library's train split (mostly PEP8-clean) and the base model's own samples on
training prompts at temperature 1 (often broken). Every line is scored by pycodestyle
(violations per character; a document that does not compile scores as a failure on every
line). Each objective — MLE, filtering, conditional training, unlikelihood, RWR, AWR
(SPEC 3.4, PHF's PEP8 hyperparameters) — finetunes the base model on the same documents
for the same number of steps at the same learning rate; then each model is evaluated on
the same held-out function headers (T 0.7, top-p 0.9, syntax failures counted) and on
unconditional samples, with KL(π || base) from samples at temperature 1. A conditionally
trained model is sampled from ``<|good|>`` with ``<|bad|>`` blocked.

    python benchmarks/bench_phf_pep8.py --out runs/bench-phf          # ~40 min on 2 CPU cores
    python benchmarks/bench_phf_pep8.py --out runs/bench-phf --eval-samples 4 --unconditional 256   # re-evaluate, 4x the samples
    python benchmarks/bench_phf_pep8.py --out runs/bench-phf-smoke --smoke

Writes OUT/results.json, OUT/pareto.png (misalignment vs KL, PHF's Figure) and prints a
markdown table; an objective whose run folder holds a finished summary is not rerun.
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import time
from pathlib import Path

log = logging.getLogger("bench_phf_pep8")

OBJECTIVES = ("phf-mle", "phf-filter", "phf-cond", "phf-ul", "phf-rwr", "phf-awr")


def build_corpus(out: Path, args: argparse.Namespace) -> Path:
    """OUT/corpus.jsonl: stdlib methods + base-model samples (prompt + completion)."""
    from tokenalign.objectives.phf_data import task_documents
    from tokenalign.rollout.generate import SamplingConfig, generate
    from tokenalign.tasks import get_task
    from tokenalign.utils.io import atomic_write_text
    from tokenalign.utils.models import load_causal_lm

    path = out / "corpus.jsonl"
    if path.is_file():
        return path
    task = get_task("pep8")
    methods = task_documents("pep8", args.methods_docs, args.seed)
    model, tokenizer = load_causal_lm(task.base_model)
    prompts = task.prompts("train")[: args.sample_docs]
    cfg = SamplingConfig(max_new_tokens=min(128, args.max_tokens), temperature=1.0, top_p=1.0, batch_size=64,
                         stop=list(task.stop), seed=args.seed + 1)
    samples = generate(model, tokenizer, prompts, cfg)
    generated = [s.prompt + task.text_fn(s.completion, s.finished) for s in samples]
    docs = methods + generated
    atomic_write_text(path, "".join(json.dumps({"text": d}) + "\n" for d in docs))
    log.info("corpus: %d methods + %d base-model samples -> %s", len(methods), len(generated), path)
    return path


def corpus_stats(path: Path) -> dict:
    from tokenalign.data.segments import Pep8SegmentScorer, document_score

    texts = [json.loads(line)["text"] for line in path.read_text().splitlines() if line.strip()]
    scores = [document_score(s) for s in Pep8SegmentScorer().score_documents(texts)]
    return {"documents": len(texts), "mean_document_score": sum(scores) / len(scores),
            "clean_documents": sum(s == 0 for s in scores) / len(scores)}


def train_objective(name: str, corpus: Path, out: Path, args: argparse.Namespace) -> Path:
    from tokenalign.config import from_dict
    from tokenalign.policy.config import TrainConfig
    from tokenalign.jobs.train import build_trainer, finish_run

    run_dir = out / name
    summary = run_dir / "summary.json"
    if summary.is_file() and json.loads(summary.read_text()).get("finished"):
        log.info("%s: already trained", name)
        return run_dir
    cfg = from_dict(TrainConfig, {
        "out_dir": str(run_dir), "objective": name, "iterations": args.iterations, "prompts_per_iteration": args.batch,
        "lr": args.lr, "seed": args.seed, "save_every": max(args.iterations // 4, 1),
        "phf": {"corpus": str(corpus), "documents": 10**9, "max_tokens": args.max_tokens},
        "eval": {"every": 0},
    })
    trainer, resume = build_trainer(cfg, run_dir)
    t0 = time.perf_counter()
    trainer.fit(resume_from=resume)
    finish_run(trainer, cfg, run_dir)
    trainer.close()
    log.info("%s: trained in %.0f s", name, time.perf_counter() - t0)
    return run_dir


def evaluate_model(model_dir: str, args: argparse.Namespace) -> dict:
    """Prompted and unconditional misalignment, KL to the base model, length, distinct-n."""
    import dataclasses

    from tokenalign.evaluate.policy_eval import PolicyEvalSettings, evaluate_policy
    from tokenalign.objectives.conditioning import Conditioning
    from tokenalign.rollout.batch import token_logprobs
    from tokenalign.tasks import get_task
    from tokenalign.utils.models import load_causal_lm

    task = get_task("pep8")
    model, tokenizer = load_causal_lm(model_dir)
    base, _ = load_causal_lm(task.base_model)
    conditioning = Conditioning.for_model(model, tokenizer)

    def ref_logprobs(batch):
        return token_logprobs(base, batch)["logprobs"]

    settings = PolicyEvalSettings(samples_per_prompt=args.eval_samples, seed=args.seed + 4242)
    settings.sampling.max_new_tokens = 128
    prompted = evaluate_policy(model, tokenizer, task.prompts("test", args.eval_prompts), task.scorer, settings,
                               list(task.stop), task.text_fn, ref_logprobs, conditioning=conditioning)
    uncond = evaluate_policy(model, tokenizer, [""] * args.unconditional, task.scorer,
                             dataclasses.replace(settings, kl_samples=False), [], task.text_fn, None, conditioning=conditioning)
    return {"prompted": prompted, "unconditional": {k: uncond[k] for k in ("mean_misalignment", "syntax_failure_rate",
                                                                           "violation_free_rate", "mean_length_tokens")},
            "conditional": conditioning is not None}


def table(results: dict) -> str:
    lines = ["| objective | misalignment (prompted) | violation-free | syntax failures | misalignment (unconditional) | "
             "KL to base | length | distinct-2 |", "|---|---|---|---|---|---|---|---|"]
    for name, r in results.items():
        p, u = r["prompted"], r["unconditional"]
        lines.append(f"| {name} | {p['mean_misalignment']:.4f} | {p['violation_free_rate']:.1%} | {p['syntax_failure_rate']:.1%} | "
                     f"{u['mean_misalignment']:.4f} | {p.get('kl_to_ref', 0.0):.2f} | {p['mean_length_tokens']:.1f} | "
                     f"{p['distinct_2']:.3f} |")
    return "\n".join(lines)


def pareto_plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for ax, kind in zip(axes, ("prompted", "unconditional")):
        for name, r in results.items():
            ax.scatter(r["prompted"].get("kl_to_ref", 0.0), r[kind]["mean_misalignment"], s=40)
            ax.annotate(name.replace("phf-", ""), (r["prompted"].get("kl_to_ref", 0.0), r[kind]["mean_misalignment"]),
                        textcoords="offset points", xytext=(4, 4), fontsize=8)
        ax.set_xlabel("KL(π || base) per sample (nats)")
        ax.set_ylabel(f"misalignment ({kind})")
        ax.set_yscale("log")
        ax.grid(alpha=0.3)
    fig.suptitle("PHF objectives on pep8: misalignment vs KL to the base model (lower-left is better)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    from tokenalign.tasks.pep8 import base_model_path

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="runs/bench-phf")
    p.add_argument("--objectives", default=",".join(OBJECTIVES))
    p.add_argument("--methods-docs", type=int, default=1500, help="standard-library methods in the corpus")
    p.add_argument("--sample-docs", type=int, default=1000, help="base-model samples in the corpus")
    p.add_argument("--max-tokens", type=int, default=256)
    p.add_argument("--iterations", type=int, default=300)
    p.add_argument("--batch", type=int, default=16, help="documents per step")
    p.add_argument("--lr", type=float, default=2e-4)
    p.add_argument("--eval-prompts", type=int, default=128)
    p.add_argument("--eval-samples", type=int, default=1, help="samples per held-out prompt (4: half the standard error)")
    p.add_argument("--unconditional", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", default="", help="also write the results here (e.g. benchmarks/results/phf_pep8.json)")
    p.add_argument("--smoke", action="store_true")
    args = p.parse_args()
    if args.smoke:
        args.methods_docs, args.sample_docs, args.iterations, args.batch = 12, 4, 2, 4
        args.eval_prompts, args.unconditional, args.max_tokens, args.eval_samples = 4, 2, 64, 1
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    corpus = build_corpus(out, args)
    results: dict = {"base": evaluate_model(str(base_model_path()), args)}
    for name in args.objectives.split(","):
        results[name] = evaluate_model(str(train_objective(name, corpus, out, args) / "model"), args)
    report = {"machine": f"{platform.processor() or platform.machine()}, {platform.platform()}", "args": vars(args),
              "corpus": corpus_stats(corpus), "results": results, "seconds": time.perf_counter() - t0}
    (out / "results.json").write_text(json.dumps(report, indent=2) + "\n")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    pareto_plot(results, out / "pareto.png")
    print(table(results))
    print(f"corpus: {report['corpus']}")


if __name__ == "__main__":
    main()
