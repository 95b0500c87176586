"""Policy-optimization benchmark on the pep8 task: token-level vs sequence-level guidance.

Every method starts from the shipped base model, trains on the task's training prompts
with the same sample budget (iterations x prompts_per_iteration x samples_per_prompt
samples at temperature 1, <= max_new_tokens each), and is evaluated on the same held-out
test prompts with the same seeds (SPEC 3.4 settings: T 0.7, top-p 0.9) by the gold
pycodestyle scorer, syntax failures counted as failures:

- ``pg-loop``: ``tokenalign align`` — token guidance re-learned from rankings of K samples,
  token REINFORCE with max-entropy (SPEC 1.4b, 1.5);
- ``ppo-token-edits``: fine-grained PPO with dense rewards from an edit-supervised token
  reward model (autopep8 edits of base-model samples on training prompts, SPEC 2);
- ``ppo-token-edits+seq``: the same dense rewards plus the gold sequence score on the last
  token (the edit model never sees syntax failures: autopep8 cannot fix them);
- ``ppo-sequence``: PPO with the gold score on the last token (the holistic baseline);
- ``rloo-sequence``: KL-regularised RLOO with the gold sequence score;
- ``cdpg`` / ``dpg`` / ``fdpg-js``: distribution matching toward π0(y|x) b(y), b = 1 iff the
  sample has no PEP8 violation and compiles (per-prompt Z_c; one global Z; f-DPG with JS).

Run (on the 2-core CPU VM each method takes ~10-15 minutes at the defaults):

    python benchmarks/bench_policy_pep8.py --out runs/bench-policy
    python benchmarks/bench_policy_pep8.py --out runs/bench-smoke --smoke   # CI-sized check

It writes ``OUT/results.json`` and prints a markdown table; a method whose run folder
already holds a finished summary is not rerun (delete it to redo).
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import time
from pathlib import Path

log = logging.getLogger("bench_policy_pep8")


def method_configs(args: argparse.Namespace, rm_dir: Path) -> dict[str, dict]:
    common = {
        "iterations": args.iterations, "prompts_per_iteration": args.prompts_per_iteration,
        "samples_per_prompt": args.samples_per_prompt, "sampling": {"max_new_tokens": args.max_new_tokens},
        "eval": {"every": args.eval_every, "prompts": args.eval_prompts, "sampling": {"max_new_tokens": args.max_new_tokens}},
        "seed": args.seed,
    }
    return {
        # The demo's PG settings (measured at demo size, README): r_φ's token rewards normalised
        # per batch to a unit-spread sample total, reward-to-go, whitened, per-token KL
        # --pg-kl-coef; r_φ reads an end token and also learns from the rollouts since its
        # last round.
        "pg-loop": {"kind": "align", "relearn_every": max(1, args.iterations // 4),
                    "policy": {**common, "lr": args.lr, "objective": "reinforce", "entropy_coef": args.entropy_coef,
                               "kl_coef": args.pg_kl_coef, "reinforce": {"baseline": "whiten", "reward_to_go": True},
                               "reward": {"source": "guidance", "placement": "token", "normalize": "sequence"}},
                    "guidance": {"prompts": args.guidance_prompts, "reuse_rollouts": True, "head": {"end_token": True},
                                 "learn": {"epochs": 2, "lr": 1e-4, "max_length": 256, "batch_size": 8,
                                           "aggregator": "avg"}}},
        "ppo-token-edits": {"kind": "train", **common, "objective": "ppo", "lr": args.lr, "kl_coef": args.kl_coef,
                            "reward": {"source": "token_model", "token_model": str(rm_dir), "placement": "token"}},
        "ppo-token-edits+seq": {"kind": "train", **common, "objective": "ppo", "lr": args.lr, "kl_coef": args.kl_coef,
                                "reward": {"source": "token_model", "token_model": str(rm_dir), "placement": "token", "plus_scorer": 1.0}},
        "ppo-sequence": {"kind": "train", **common, "objective": "ppo", "lr": args.lr, "kl_coef": args.kl_coef,
                         "reward": {"source": "scorer", "placement": "sequence"}},
        # Fine-grained PPO with gold dense rewards: the same sequence reward as ppo-sequence,
        # spread over the tokens pycodestyle blames (each violation on its token), so the
        # two runs differ only in where the reward lands.
        "ppo-token-blame": {"kind": "train", **common, "objective": "ppo", "lr": args.lr, "kl_coef": args.kl_coef,
                            "reward": {"source": "blame", "placement": "token"}},
        # Token REINFORCE on the same gold dense rewards: reward-to-go per token, whitened over
        # the batch, one update per rollout (as RLOO).
        "reinforce-token-blame": {"kind": "train", **common, "objective": "reinforce", "lr": args.lr, "kl_coef": args.kl_coef,
                                  "reinforce": {"reward_to_go": True, "baseline": "whiten"},
                                  "reward": {"source": "blame", "placement": "token"}},
        # Its holistic control: the same objective with the same total reward on the last token.
        "reinforce-sequence": {"kind": "train", **common, "objective": "reinforce", "lr": args.lr, "kl_coef": args.kl_coef,
                               "reinforce": {"reward_to_go": True, "baseline": "whiten"},
                               "reward": {"source": "scorer", "placement": "sequence"}},
        "rloo-sequence": {"kind": "train", **common, "objective": "rloo", "lr": args.lr, "kl_coef": args.kl_coef,
                          "reward": {"source": "scorer", "placement": "sequence"}},
        # Distribution matching toward π0 x b, b = 1 iff no PEP8 violation (SPEC 3.3): no KL
        # coefficient — the target itself keeps the policy close to the base. fp32: the
        # importance weights π0/π are products over whole responses, and bf16 logits add
        # noise to them.
        "cdpg": {"kind": "train", **common, "objective": "cdpg", "lr": args.lr, "dm": {"target": "constraint"},
                 "mixed_precision": "no"},
        "dpg": {"kind": "train", **common, "objective": "dpg", "lr": args.lr, "dm": {"target": "constraint"},
                "mixed_precision": "no"},
        "fdpg-js": {"kind": "train", **common, "objective": "fdpg", "lr": args.lr,
                    "dm": {"target": "constraint", "divergence": "js"}, "mixed_precision": "no"},
    }


def edits_dataset(data_dir: Path, n_prompts: int, seed: int, max_new_tokens: int | None = None, task: str = "pep8",
                  model: str = "", editor: str = "", samples_per_prompt: int = 4) -> Path:
    """Base-model samples (``samples_per_prompt`` per prompt) on the first ``n_prompts``
    *training* prompts of ``task``, each edited minimally by the task's editor (pep8:
    autopep8; ``editor`` overrides it): ``data_dir/edits.jsonl`` (original, edited) — the
    input of edit-supervised token rewards (``tokenalign demo --set prompt_split=train``;
    ``model`` "" = the task's base model). Kept if there."""
    from tokenalign.config import from_dict
    from tokenalign.jobs.demo import DemoConfig, run_demo

    if not (data_dir / "edits.jsonl").is_file():
        sampling = {"max_new_tokens": max_new_tokens} if max_new_tokens else {}
        run_demo(from_dict(DemoConfig, {"out_dir": str(data_dir), "task": task, "model": model, "editor": editor,
                                        "prompt_split": "train", "n_prompts": n_prompts,
                                        "samples_per_prompt": samples_per_prompt, "n_unconditional": 0, "seed": seed,
                                        "align": {"enabled": False}, "sampling": sampling}))
    return data_dir / "edits.jsonl"


def learn_reward_model(rm_out: Path, spec: dict) -> Path:
    """``tokenalign reward`` with config ``spec`` into ``rm_out`` (kept if its model/ is there)."""
    from tokenalign.config import from_dict
    from tokenalign.jobs.reward import RewardRunConfig, run_reward

    if not (rm_out / "model").is_dir():
        run_reward(from_dict(RewardRunConfig, {**spec, "out_dir": str(rm_out)}))
    return rm_out / "model"


def prepare_edit_reward_model(out: Path, args: argparse.Namespace) -> Path:
    """Base-model samples on training prompts -> autopep8 edits -> token reward model."""
    edits = edits_dataset(out / "edits-data", args.edit_prompts, args.seed)
    return learn_reward_model(out / "rm-edits", {
        "data": {"train": str(edits), "format": "edits"}, "head": {"bounding": "centered_sigmoid"},
        "learn": {"epochs": args.rm_epochs, "lr": 1e-4, "max_length": 256}})


def run_method(name: str, spec: dict, out: Path) -> dict:
    from tokenalign.config import from_dict
    from tokenalign.jobs.align import AlignConfig, run_align
    from tokenalign.policy.config import TrainConfig
    from tokenalign.jobs.train import run_train

    run_dir = out / name
    summary_file = run_dir / "summary.json"
    if summary_file.is_file() and json.loads(summary_file.read_text()).get("finished"):
        log.info("%s: already done", name)
    else:
        spec_kind = spec["kind"]
        spec = {k: v for k, v in spec.items() if k != "kind"} | {"out_dir": str(run_dir)}
        t0 = time.perf_counter()
        if spec_kind == "align":
            run_align(from_dict(AlignConfig, spec))
        else:
            run_train(from_dict(TrainConfig, spec))
        log.info("%s: %.0f s", name, time.perf_counter() - t0)
    summary = json.loads(summary_file.read_text())
    rows = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines() if x.strip()]
    curve = [{"samples": r.get("samples_seen", 0), "tokens": r.get("tokens_seen", 0), "misalignment": r["eval_mean_misalignment"],
              "kl": r.get("eval_kl_to_ref")} for r in rows if "eval_mean_misalignment" in r]
    seconds = sum(r.get("seconds", 0.0) for r in rows)
    # before / after: the run's own held-out evaluation (absent with eval.every 0)
    return {"name": name, "before": summary.get("before"), "after": summary.get("after"), "samples": summary["samples_seen"],
            "tokens": summary["tokens_seen"], "train_seconds": seconds, "curve": curve, "iterations": summary["iteration"],
            "stopped_early": summary.get("stopped_early"),
            "rollout_kl": [r["kl"] for r in rows if "kl" in r], "rollout_reward": [r["reward"] for r in rows if "reward" in r]}


def samples_to_reach(curve: list[dict], target: float) -> int | None:
    for point in curve:
        if point["misalignment"] <= target:
            return point["samples"]
    return None


def table(results: list[dict]) -> str:
    base = results[0]["before"]
    lines = [
        "| method | misalignment | violation-free | syntax failures | KL to base | mean length (tokens) | distinct-2 | samples | train s |",
        "|---|---|---|---|---|---|---|---|---|",
        f"| base model | {base['mean_misalignment']:.4f} | {base['violation_free_rate']:.1%} | {base['syntax_failure_rate']:.1%} | 0 | "
        f"{base['mean_length_tokens']:.1f} | {base['distinct_2']:.3f} | 0 | 0 |",
    ]
    for r in results:
        a = r["after"]
        lines.append(f"| {r['name']} | {a['mean_misalignment']:.4f} | {a['violation_free_rate']:.1%} | {a['syntax_failure_rate']:.1%} | "
                     f"{a.get('kl_to_ref', float('nan')):.2f} | {a['mean_length_tokens']:.1f} | {a['distinct_2']:.3f} | {r['samples']} | {r['train_seconds']:.0f} |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="runs/bench-policy")
    p.add_argument("--methods", default="pg-loop,ppo-token-edits,ppo-token-edits+seq,ppo-sequence,rloo-sequence")
    p.add_argument("--iterations", type=int, default=40)
    p.add_argument("--prompts-per-iteration", type=int, default=16)
    p.add_argument("--samples-per-prompt", type=int, default=4)
    p.add_argument("--max-new-tokens", type=int, default=128)
    p.add_argument("--lr", type=float, default=5e-5)
    p.add_argument("--kl-coef", type=float, default=0.05)
    p.add_argument("--entropy-coef", type=float, default=0.0)
    p.add_argument("--eval-every", type=int, default=10)
    p.add_argument("--eval-prompts", type=int, default=128)
    p.add_argument("--guidance-prompts", type=int, default=64, help="fresh prompts (x K samples) ranked per PG round")
    p.add_argument("--pg-kl-coef", type=float, default=0.2, help="pg-loop's per-token KL coefficient")
    p.add_argument("--edit-prompts", type=int, default=300)
    p.add_argument("--rm-epochs", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--smoke", action="store_true", help="tiny sizes: checks the benchmark runs end to end")
    args = p.parse_args()
    if args.smoke:
        args.iterations, args.prompts_per_iteration, args.samples_per_prompt = 2, 2, 2
        args.max_new_tokens, args.eval_every, args.eval_prompts = 24, 2, 4
        args.guidance_prompts, args.edit_prompts, args.rm_epochs = 4, 4, 1
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    wanted = args.methods.split(",")
    rm_dir = prepare_edit_reward_model(out, args) if any(m.startswith("ppo-token-edits") for m in wanted) else out / "rm-edits" / "model"
    specs = method_configs(args, rm_dir)
    results = [run_method(name, specs[name], out) for name in wanted]
    seq_final = {r["name"]: r["after"]["mean_misalignment"] for r in results if r["name"].endswith("sequence")}
    if seq_final:
        best_seq = min(seq_final.values())
        for r in results:
            r["samples_to_best_sequence_final"] = samples_to_reach(r["curve"], best_seq)
    report = {"machine": f"{platform.machine()} {platform.processor() or ''}, {platform.python_version()}".strip(),
              "args": vars(args), "results": results, "table": table(results)}
    (out / "results.json").write_text(json.dumps(report, indent=2) + "\n")
    print(report["table"])
    for r in results:
        print(f"{r['name']}: held-out misalignment by samples seen: "
              + ", ".join(f"{c['samples']}: {c['misalignment']:.4f}" for c in r["curve"]))


if __name__ == "__main__":
    main()
