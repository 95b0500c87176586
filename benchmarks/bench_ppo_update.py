"""A PPO iteration's passes on SmolLM2 with LoRA on its last blocks, with and without reusing
the frozen trunk (``reuse_frozen_trunk``, ``tokenalign/policy/trunk.py``).

One sampled rollout of the pii task at fg_vs_holistic_pii.py's size (``--prompts`` training
prompts x 4 answers of at most 64 tokens; rewards: scrubadub's blame on the tokens, KL 0.3),
then from those samples, ``--repeats`` times each way, alternating: the rollout's passes
(``make_rollout``: reference log-probs, values, rewards) and the PPO update from the same
weights and optimizer state (4 epochs x minibatches of 16, a LoRA value model on the same
blocks, bf16 autocast where the CPU has it). With reuse the value model and the reference
start from the policy's trunk (one base) and the update reuses it. Reports the median
seconds of each part, the speed-ups, and how far apart the two ways leave the reference
log-probs, the values, the policy's adapters and the update's statistics (the same math:
differences are rounding).

    python benchmarks/bench_ppo_update.py --threads 2                  # ~10 min on the 2-core VM
    python benchmarks/bench_ppo_update.py --smoke --model DIR --json /tmp/ppo-update.json

Writes ``benchmarks/results/ppo_update.json`` (``--json``) and prints a summary.
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import platform
import statistics
import sys
import time
from pathlib import Path

log = logging.getLogger("bench_ppo_update")


def build(args: argparse.Namespace):
    """The PPO trainer of the pii task with LoRA on the last ``--lora-layers`` blocks."""
    from tokenalign.config import from_dict
    from tokenalign.jobs.train import build_trainer
    from tokenalign.policy.config import TrainConfig
    from tokenalign.tasks import get_task
    from tokenalign.utils.lora import last_layers_lora

    model = args.model or get_task("pii").model_path()
    spec = {"task": "pii", "model": args.model, "objective": "ppo", "iterations": 1, "lr": 5e-4, "kl_coef": 0.3,
            "prompts_per_iteration": args.prompts, "samples_per_prompt": 4, "seed": 0, "eval": {"every": 0},
            "sampling": {"max_new_tokens": args.max_new_tokens}, "lora": last_layers_lora(model, args.lora_layers),
            "reward": {"source": "blame", "placement": "token"},
            "ppo": {"epochs": 4, "minibatch_size": 16, "clip": 0.2, "value_clip": 0.2, "gamma": 1.0, "lam": 0.95,
                    "whiten_rewards": True}}
    trainer, _ = build_trainer(from_dict(TrainConfig, spec))
    return trainer


def timed_iterations(trainer, samples, repeats: int) -> dict:
    """Each way ``repeats`` times from the same samples and state: the seconds of the
    rollout's passes and of the update, the last rollout, statistics and adapters."""
    import torch

    params = [p for group in trainer.optimizer.param_groups for p in group["params"]]
    start = [p.detach().clone() for p in params]
    opt_state = copy.deepcopy(trainer.optimizer.state_dict())
    out = {False: {"seconds": [], "rollout_seconds": []}, True: {"seconds": [], "rollout_seconds": []}}
    for _ in range(repeats):
        for reuse in (False, True):
            with torch.no_grad():
                for p, s in zip(params, start):
                    p.copy_(s)
            trainer.optimizer.load_state_dict(copy.deepcopy(opt_state))
            trainer.cfg.reuse_frozen_trunk = reuse
            t0 = time.perf_counter()
            ro = trainer.make_rollout(samples, sampled_by="policy")
            t1 = time.perf_counter()
            stats = trainer.update(ro)
            out[reuse]["seconds"].append(time.perf_counter() - t1)
            out[reuse]["rollout_seconds"].append(t1 - t0)
            out[reuse].update(stats=stats, rollout=ro, params=[p.detach().clone() for p in params])
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="", help="base model folder; '': the pii task's SmolLM2")
    p.add_argument("--prompts", type=int, default=8, help="training prompts of the rollout (x4 answers)")
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--lora-layers", type=int, default=6, help="LoRA on the last N blocks (policy and value model)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--json", default=str(Path(__file__).parent / "results" / "ppo_update.json"))
    p.add_argument("--smoke", action="store_true", help="tiny sizes: checks the benchmark runs end to end")
    args = p.parse_args()
    if args.smoke:
        args.prompts, args.max_new_tokens, args.repeats = 4, 8, 1
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    import torch

    from tokenalign.policy.trunk import frozen_blocks

    if args.threads:
        torch.set_num_threads(args.threads)
    trainer = build(args)
    ro = trainer.rollout(trainer.iteration_prompts(0), seed=0)
    runs = timed_iterations(trainer, ro.samples, args.repeats)
    off, on = runs[False], runs[True]
    mask = ro.batch.response_mask
    report = {
        "command": "python benchmarks/bench_ppo_update.py " + " ".join(sys.argv[1:]),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": f"{platform.machine()} {platform.processor() or ''}, {torch.get_num_threads()} threads".strip(),
        "rows": len(ro.samples), "response_tokens": int(ro.batch.response_mask.sum()),
        "sequence_columns": int(ro.batch.input_ids.shape[1]),
        "blocks": trainer.unwrapped_policy.config.num_hidden_layers, "frozen_blocks": frozen_blocks(trainer.policy),
        "seconds_whole": off["seconds"], "seconds_reuse": on["seconds"],
        "median_whole": statistics.median(off["seconds"]), "median_reuse": statistics.median(on["seconds"]),
        "rollout_seconds_whole": off["rollout_seconds"], "rollout_seconds_reuse": on["rollout_seconds"],
        "rollout_median_whole": statistics.median(off["rollout_seconds"]),
        "rollout_median_reuse": statistics.median(on["rollout_seconds"]),
        "max_abs_ref_logprob_diff": float((off["rollout"].ref_logprobs - on["rollout"].ref_logprobs)[mask].abs().max()),
        "max_abs_value_diff": float((off["rollout"].values - on["rollout"].values)[mask].abs().max()),
        "max_abs_param_diff": max(float((a - b).abs().max()) for a, b in zip(off["params"], on["params"])),
        "stats_whole": off["stats"], "stats_reuse": on["stats"],
    }
    report["speedup"] = report["median_whole"] / report["median_reuse"]
    report["rollout_speedup"] = report["rollout_median_whole"] / report["rollout_median_reuse"]
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    print(f"PPO update, {report['rows']} rows, {report['frozen_blocks']} of {report['blocks']} blocks frozen: "
          f"whole {report['median_whole']:.1f} s, reusing the trunk {report['median_reuse']:.1f} s "
          f"(x{report['speedup']:.2f}); adapters apart by at most {report['max_abs_param_diff']:.2e}")
    print(f"rollout passes (reference, values, rewards): whole {report['rollout_median_whole']:.1f} s, reusing the "
          f"trunk {report['rollout_median_reuse']:.1f} s (x{report['rollout_speedup']:.2f}); reference log-probs apart "
          f"by at most {report['max_abs_ref_logprob_diff']:.2e}, values {report['max_abs_value_diff']:.2e}")
    for key in ("policy_loss", "value_loss", "clip_fraction", "approx_kl_old"):
        print(f"  {key}: whole {off['stats'].get(key, float('nan')):.6g}, reuse {on['stats'].get(key, float('nan')):.6g}")


if __name__ == "__main__":
    main()
