"""Head-to-head on the pep8 task: tokenalign vs TRL's GRPOTrainer and RLOOTrainer.

Same base model (the shipped 4.3M GPT-2), same training prompts, same sample budget
(steps x prompts_per_step x generations completions of <= max_new_tokens at temperature
1), same learning rate, KL coefficient and precision (``--precision``: fp32, or bf16
autocast for all), same machine, in one run. Each contender runs
in its own process (so peak RSS is its own) and its final policy is evaluated by the same
code (``tokenalign.evaluate.policy_eval``) on the same held-out prompts and seeds.

The reward for TRL is the pep8 gold scorer as a reward function (``-misalignment`` of the
completion cut at the task's stop strings and to complete lines, exactly what tokenalign
scores). TRL has no per-token rewards, so its contenders are sequence-level; tokenalign
runs its sequence-level RLOO (the like-for-like baseline) and, optionally, a token-level
method.

    pip install -e ".[bench]"
    python benchmarks/bench_trl_pep8.py --out runs/bench-trl            # ~30-40 min on 2 CPU cores
    python benchmarks/bench_trl_pep8.py --out runs/bench-trl-smoke --smoke

Reported per contender: seconds per RL iteration (sampling + training), sampled tokens
per second of the whole iteration, peak RSS, and the held-out table.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import platform
import resource
import time
from pathlib import Path


def _pep8_reward():
    from tokenalign.rollout.generate import first_stop
    from tokenalign.scorers.pep8 import Pep8Scorer
    from tokenalign.tasks.pep8 import STOP_STRINGS, complete_lines

    scorer = Pep8Scorer()

    def cut(text: str) -> tuple[str, bool]:
        at = first_stop(text, STOP_STRINGS)
        return (text[:at], True) if at >= 0 else (text, False)

    def reward(prompts, completions, **kwargs) -> list[float]:
        scored = [complete_lines(*cut(c)) for c in completions]
        return [-r.misalignment for r in scorer.score(scored, list(prompts))]

    return reward


def _evaluate(model_dir: str, args) -> dict:
    from tokenalign.evaluate.policy_eval import PolicyEvalSettings, evaluate_policy
    from tokenalign.utils.models import load_causal_lm
    from tokenalign.rollout.batch import token_logprobs
    from tokenalign.scorers.pep8 import Pep8Scorer
    from tokenalign.tasks.pep8 import STOP_STRINGS, base_model_path, complete_lines
    from tokenalign.tasks.pep8.prompts import load_prompts

    model, tok = load_causal_lm(model_dir)
    ref, _ = load_causal_lm(str(base_model_path()))
    settings = PolicyEvalSettings(seed=args.seed + 4242)
    settings.sampling.max_new_tokens = args.max_new_tokens
    return evaluate_policy(model.eval(), tok, load_prompts("test", args.eval_prompts), Pep8Scorer(), settings, list(STOP_STRINGS),
                           complete_lines, lambda b: token_logprobs(ref.eval(), b)["logprobs"])


def _run_trl(kind: str, args, out: Path) -> dict:
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tokenalign.tasks.pep8 import base_model_path
    from tokenalign.tasks.pep8.prompts import load_prompts

    torch.set_num_threads(args.threads)
    if kind.startswith("trl-grpo"):
        from trl import GRPOConfig as Config, GRPOTrainer as Trainer
    else:
        from trl import RLOOConfig as Config, RLOOTrainer as Trainer
    tok = AutoTokenizer.from_pretrained(base_model_path())
    tok.pad_token = tok.pad_token or tok.eos_token
    tok.padding_side = "left"
    model = AutoModelForCausalLM.from_pretrained(base_model_path())
    n = args.steps * args.prompts_per_step
    prompts = (load_prompts("train") * (n // 616 + 1))[:n]
    config = Config(
        output_dir=str(out / kind), per_device_train_batch_size=args.prompts_per_step * args.generations,
        num_generations=args.generations, max_completion_length=args.max_new_tokens, temperature=1.0, top_p=1.0,
        learning_rate=args.lr, beta=args.kl_coef, max_steps=args.steps, steps_per_generation=1, num_iterations=1,
        gradient_accumulation_steps=1, logging_steps=1, save_strategy="no", report_to=[], use_cpu=True, bf16=args.precision == "bf16",
        seed=args.seed, lr_scheduler_type="constant", warmup_steps=0, shuffle_dataset=False,
        # TRL's trainers default to gradient checkpointing (less memory, one more forward in
        # the backward); the "-nockpt" contenders turn it off, as tokenalign runs.
        gradient_checkpointing=not kind.endswith("-nockpt"),
    )
    trainer = Trainer(model=model, reward_funcs=_pep8_reward(), args=config, train_dataset=Dataset.from_dict({"prompt": prompts}),
                      processing_class=tok)
    t0 = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - t0
    trainer.save_model(str(out / kind / "model"))
    tok.save_pretrained(str(out / kind / "model"))
    logs = [x for x in trainer.state.log_history if "completions/mean_length" in x]
    tokens = sum(x["completions/mean_length"] * args.prompts_per_step * args.generations for x in logs)
    return {"seconds": seconds, "sampled_tokens": tokens, "model": str(out / kind / "model")}


def _run_tokenalign(kind: str, args, out: Path) -> dict:
    import torch

    from tokenalign.config import from_dict
    from tokenalign.policy.config import TrainConfig
    from tokenalign.jobs.train import run_train

    torch.set_num_threads(args.threads)
    method = {
        "tokenalign-rloo": {"objective": "rloo"},
        "tokenalign-reinforce": {"objective": "reinforce", "reinforce": {"baseline": "mean"}},
        # token-level: pycodestyle's blame as dense gold rewards (each violation on its token)
        "tokenalign-reinforce-blame": {"objective": "reinforce", "reinforce": {"reward_to_go": True, "baseline": "whiten"},
                                       "reward": {"source": "blame", "placement": "token"}},
        "tokenalign-ppo-blame": {"objective": "ppo", "reward": {"source": "blame", "placement": "token"}},
    }[kind]
    cfg = from_dict(TrainConfig, {
        "out_dir": str(out / kind), "iterations": args.steps, "prompts_per_iteration": args.prompts_per_step,
        "samples_per_prompt": args.generations, "lr": args.lr, "kl_coef": args.kl_coef,
        "mixed_precision": "bf16" if args.precision == "bf16" else "no",
        "sampling": {"max_new_tokens": args.max_new_tokens}, "eval": {"every": 0}, "seed": args.seed, "save_every": 0,
        **method,
    })
    summary = run_train(cfg)
    # Time of the RL iterations themselves (sampling + scoring + training), as TRL's train() is timed.
    rows = [json.loads(x) for x in (out / kind / "metrics.jsonl").read_text().splitlines() if x.strip()]
    seconds = sum(r.get("seconds", 0.0) for r in rows)
    return {"seconds": seconds, "sampled_tokens": summary["tokens_seen"], "model": str(out / kind / "model")}


def _contender(kind: str, args, out: Path, queue) -> None:
    import logging

    logging.basicConfig(level=logging.WARNING)
    result = (_run_trl if kind.startswith("trl") else _run_tokenalign)(kind, args, out)
    result["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    result["eval"] = _evaluate(result["model"], args)
    queue.put(result)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="runs/bench-trl")
    p.add_argument("--contenders", default="tokenalign-rloo,trl-rloo,trl-grpo",
                   help="comma-separated: tokenalign-rloo, tokenalign-reinforce, tokenalign-reinforce-blame, "
                        "tokenalign-ppo-blame, trl-grpo, trl-rloo (TRL defaults: gradient checkpointing on), "
                        "trl-grpo-nockpt, trl-rloo-nockpt (checkpointing off)")
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--prompts-per-step", type=int, default=16)
    p.add_argument("--generations", type=int, default=4)
    p.add_argument("--max-new-tokens", type=int, default=128)
    p.add_argument("--lr", type=float, default=5e-5)
    p.add_argument("--kl-coef", type=float, default=0.05)
    p.add_argument("--eval-prompts", type=int, default=128)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--precision", choices=["fp32", "bf16"], default="fp32",
                   help="training precision of every contender: fp32, or bf16 autocast (TRL's bf16=True)")
    p.add_argument("--repeats", type=int, default=1,
                   help="run every contender this many times, in rotating order; the median run is reported")
    p.add_argument("--smoke", action="store_true")
    args = p.parse_args()
    if args.smoke:
        args.steps, args.prompts_per_step, args.generations, args.max_new_tokens, args.eval_prompts = 2, 2, 2, 24, 4
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    ctx = mp.get_context("spawn")
    kinds = args.contenders.split(",")
    runs: dict[str, list[dict]] = {kind: [] for kind in kinds}
    for rep in range(args.repeats):  # contenders in turn, the order rotated each round
        for kind in kinds[rep % len(kinds) :] + kinds[: rep % len(kinds)]:
            queue = ctx.Queue()
            run_out = out if args.repeats == 1 else out / f"round-{rep + 1}"  # every run starts from nothing
            proc = ctx.Process(target=_contender, args=(kind, args, run_out, queue))
            proc.start()
            runs[kind].append(queue.get())
            proc.join()
    results = {}
    for kind, rs in runs.items():
        # the run with the median time stands for the contender; every run is kept
        r = dict(sorted(rs, key=lambda x: x["seconds"])[(len(rs) - 1) // 2])
        r["runs"] = [{k: x[k] for k in ("seconds", "sampled_tokens", "peak_rss_mib")} for x in rs]
        results[kind] = r
    rows = ["| contender | s / iteration | sampled tokens / s | peak RSS (MiB) | misalignment | syntax failures | violation-free | KL to base | mean length |",
            "|---|---|---|---|---|---|---|---|---|"]
    for kind, r in results.items():
        e = r["eval"]
        rows.append(f"| {kind} | {r['seconds'] / args.steps:.2f} | {r['sampled_tokens'] / r['seconds']:.0f} | {r['peak_rss_mib']:.0f} | "
                    f"{e['mean_misalignment']:.4f} | {e['syntax_failure_rate']:.1%} | {e['violation_free_rate']:.1%} | "
                    f"{e.get('kl_to_ref', float('nan')):.2f} | {e['mean_length_tokens']:.1f} |")
    table = "\n".join(rows)
    report = {"machine": f"{platform.machine()} {platform.processor()}".strip(), "args": vars(args), "results": results, "table": table}
    (out / "results.json").write_text(json.dumps(report, indent=2) + "\n")
    print(table)


if __name__ == "__main__":
    main()
