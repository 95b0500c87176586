"""Hardware efficiency: tokenalign's training step as a share of the machine's matmul peak.

Two measurements on one device, in one process:

1. **Matmul peak**: ``torch.matmul`` of square n x n matrices (2 n^3 FLOPs each) for bf16
   and fp32, a few sizes, warm-up then timed repeats; each dtype's peak is its best size
   at its fastest repeat (the most favourable number, so shares against it are not
   flattered).
2. **tokenalign's RL iteration** on the pep8 task: a ``PolicyTrainer`` built by
   ``build_trainer`` from the shipped pep8 base model (4.3M-parameter GPT-2;
   ``TrainConfig`` defaults except objective ``--objective`` (rloo), 16 prompts x 4
   samples, 128 new tokens, ``mixed_precision: auto``). One rollout is taken, then
   ``trainer.update(rollout)`` (forward + backward + AdamW step) is timed over
   ``--repeats`` runs after one warm-up. Its FLOPs are counted exactly by
   ``torch.utils.flop_counter.FlopCounterMode`` in a separate, untimed run (matmuls and
   attention of forward and backward: what dominates; softmax, layer norms, GELU and
   the optimizer are not counted; the CPU flash-attention kernels, which torch's counter
   skips, are counted here with torch's own SDPA formulas: full score matrix, as on
   CUDA). Achieved FLOP/s = counted FLOPs / median seconds, reported as a share of the
   bf16 and of the fp32 peak, next to the analytic ``6 x params x tokens`` estimate.
   The rollout is measured the same way in its two parts: generation (``trainer.sample``,
   KV cache, under the run's precision: memory- and latency-bound, so its share of the
   peak is small by nature) and scoring (``trainer.make_rollout``: the reference's no-grad
   forward under autocast — the policy's log-probs come from the sampler — plus the
   pycodestyle scorer on the CPU).

Run:

    python benchmarks/bench_flops.py --device cpu --threads 2      # ~5 min on the 2-core VM
    python benchmarks/bench_flops.py --device cuda                 # on a GPU machine
    python benchmarks/bench_flops.py --smoke --out runs/bench-flops-smoke   # < 30 s: checks it runs

It writes ``benchmarks/results/flops_<device>.json`` (``--json PATH`` to change; a
``--smoke`` run writes into ``--out`` instead, never over a real result) and prints
markdown tables with the machine description.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import sys
import time
from pathlib import Path


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def say(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def machine(device: str, threads: int) -> dict:
    import torch

    info = {"cpu": cpu_model(), "cpu_count": os.cpu_count(), "threads": threads, "torch": torch.__version__,
            "python": platform.python_version(), "platform": platform.platform(),
            "cpu_capability": getattr(torch.backends.cpu, "get_cpu_capability", lambda: "")()}
    if device == "cuda":
        info["gpu"] = torch.cuda.get_device_name(0)
        info["cuda"] = torch.version.cuda
        info["fp32_matmul_allows_tf32"] = torch.backends.cuda.matmul.allow_tf32
    return info


def _sync(device: str) -> None:
    import torch

    if device == "cuda":
        torch.cuda.synchronize()


def timed(fn, device: str) -> float:
    _sync(device)
    t0 = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - t0


def matmul_peak(device: str, sizes: list[int], repeats: int, warmup: int, inner: int = 1) -> dict:
    """Best FLOP/s of n x n x n matmuls per dtype (and every size's numbers); each timed
    repeat runs ``inner`` matmuls back to back (on a GPU, so launch latency does not count)."""
    import torch

    out = {}
    for name, dtype in (("bf16", torch.bfloat16), ("fp32", torch.float32)):
        rows = []
        for n in sizes:
            g = torch.Generator(device=device).manual_seed(n)
            a = torch.randn(n, n, device=device, dtype=dtype, generator=g)
            b = torch.randn(n, n, device=device, dtype=dtype, generator=g)

            def run(a=a, b=b) -> None:
                for _ in range(inner):
                    torch.matmul(a, b)

            for _ in range(warmup):
                torch.matmul(a, b)
            secs = [timed(run, device) for _ in range(repeats)]
            flops = 2.0 * n**3 * inner
            fastest, med = min(secs), statistics.median(secs)
            rows.append({"n": n, "matmuls_per_repeat": inner, "flops": flops, "seconds_best": fastest, "seconds_median": med,
                         "flops_per_s_best": flops / fastest, "flops_per_s_median": flops / med})
            del a, b, run
            say(f"matmul {name} n={n}: {fmt_rate(rows[-1]['flops_per_s_best'])}")
        best = max(rows, key=lambda r: r["flops_per_s_best"])
        out[name] = {"peak_flops_per_s": best["flops_per_s_best"], "best_n": best["n"], "sizes": rows}
    return out


def cpu_attention_formulas() -> dict:
    """FlopCounterMode counts the CUDA attention kernels but not the CPU flash-attention ones
    (``aten._scaled_dot_product_flash_attention_for_cpu`` and its backward), which the
    model's SDPA attention runs on a CPU: count them with torch's own SDPA formulas (as on
    CUDA: the full s_q x s_k score matrix, causal masking not subtracted)."""
    import torch

    try:
        from torch.utils.flop_counter import sdpa_backward_flop_count, sdpa_flop_count
    except ImportError:  # private helpers moved: attention on CPU goes uncounted
        return {}
    aten = torch.ops.aten
    if not hasattr(aten, "_scaled_dot_product_flash_attention_for_cpu"):
        return {}

    def fwd(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
        return sdpa_flop_count(query_shape, key_shape, value_shape)

    def bwd(grad_out_shape, query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
        return sdpa_backward_flop_count(grad_out_shape, query_shape, key_shape, value_shape)

    return {aten._scaled_dot_product_flash_attention_for_cpu: fwd,
            aten._scaled_dot_product_flash_attention_for_cpu_backward: bwd}


def count_flops(fn) -> tuple[int, dict, object]:
    """(total FLOPs, FLOPs per aten op, fn's result) of one call, counted by FlopCounterMode."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False, custom_mapping=cpu_attention_formulas()) as counter:
        result = fn()
    per_op = {str(k): int(v) for k, v in counter.get_flop_counts().get("Global", {}).items()}
    return int(counter.get_total_flops()), per_op, result


def build(args, out: Path):
    from tokenalign.config import from_dict
    from tokenalign.policy.config import TrainConfig
    from tokenalign.jobs.train import build_trainer

    cfg = from_dict(TrainConfig, {
        "out_dir": str(out), "objective": args.objective, "prompts_per_iteration": args.prompts,
        "samples_per_prompt": args.samples, "sampling": {"max_new_tokens": args.max_new_tokens},
        "mixed_precision": args.mixed_precision, "eval": {"every": 0}, "save_every": 0, "seed": args.seed,
    })
    trainer, _ = build_trainer(cfg, out)
    return trainer, cfg


def measure_training(args, device: str, out: Path) -> dict:
    import torch

    from tokenalign.utils.accel import resolve_mixed_precision

    threads = torch.get_num_threads()
    trainer, cfg = build(args, out)
    torch.set_num_threads(threads)  # as set in main(), whatever building the trainer did
    policy = trainer.unwrapped_policy
    params = sum(p.numel() for p in policy.parameters())
    prompts = trainer.iteration_prompts(0)
    repeated = [p for p in prompts for _ in range(cfg.samples_per_prompt)]

    say(f"trainer built ({params:,} parameters, precision {resolve_mixed_precision(cfg.mixed_precision)}); warm-up rollout")
    # Warm-up: one whole rollout (oneDNN / cuBLAS initialisation, allocator).
    ro = trainer.rollout(prompts, seed=0)

    # Generation: the same prompts and seed each time, so the same samples and tokens.
    gen_secs = [timed(lambda: trainer.sample(repeated, seed=0), device) for _ in range(args.rollout_repeats)]
    gen_flops, gen_ops, samples = count_flops(lambda: trainer.sample(repeated, seed=0))
    sampled_tokens = sum(len(s.generated_ids) for s in samples)
    prompt_tokens = sum(len(s.prompt_ids) for s in samples)
    # Positions the model processed: generate() keeps stepping finished rows until its batch is done.
    bs = cfg.sampling.batch_size
    gen_positions = 0
    for i in range(0, len(samples), bs):
        chunk = samples[i : i + bs]
        width = max(len(s.prompt_ids) for s in chunk)
        steps = max(len(s.generated_ids) for s in chunk)
        gen_positions += len(chunk) * (width + max(steps - 1, 0))

    say(f"generation: {statistics.median(gen_secs):.2f} s, {sampled_tokens} sampled tokens")
    # Scoring: log-probs of policy and reference (no grad, autocast) + the task scorer.
    score_secs = [timed(lambda: trainer.make_rollout(samples, sampled_by="policy"), device) for _ in range(args.rollout_repeats)]
    score_flops, score_ops, ro = count_flops(lambda: trainer.make_rollout(samples, sampled_by="policy"))
    batch = ro.batch
    positions = int(batch.input_ids.numel())
    real_tokens = int(batch.attention_mask.sum())
    response_tokens = int(batch.response_mask.sum())

    say(f"scoring: {statistics.median(score_secs):.2f} s; update batch {list(batch.input_ids.shape)}")
    # Update: forward + backward + optimizer step on the rollout.
    timed(lambda: trainer.update(ro), device)  # warm-up
    upd_secs = [timed(lambda: trainer.update(ro), device) for _ in range(args.repeats)]
    say(f"update: {statistics.median(upd_secs):.2f} s")
    upd_flops, upd_ops, _ = count_flops(lambda: trainer.update(ro))

    def part(flops: int, secs: list[float], ops: dict, analytic: dict, note: str) -> dict:
        med = statistics.median(secs)
        return {"counted_flops": flops, "seconds_median": med, "seconds_all": secs,
                "achieved_flops_per_s": flops / med, "counted_flops_by_op": ops, "analytic": analytic, "note": note}

    result = {
        "config": {"objective": cfg.objective, "prompts_per_iteration": cfg.prompts_per_iteration,
                   "samples_per_prompt": cfg.samples_per_prompt, "max_new_tokens": cfg.sampling.max_new_tokens,
                   "sampling_batch_size": bs, "update_batch_size": cfg.update_batch_size,
                   "mixed_precision": cfg.mixed_precision, "resolved_precision": resolve_mixed_precision(cfg.mixed_precision),
                   "model": "pep8 base model (GPT-2, 4 layers, width 256, vocab 4096, context 256)",
                   "device": str(trainer.device), "torch_threads": torch.get_num_threads()},
        "params": params,
        "tokens": {"samples": len(samples), "sampled_tokens": sampled_tokens, "prompt_tokens": prompt_tokens,
                   "generation_positions": gen_positions, "batch_positions": positions,
                   "batch_real_tokens": real_tokens, "batch_response_tokens": response_tokens,
                   "batch_shape": list(batch.input_ids.shape)},
        "update": part(upd_flops, upd_secs, upd_ops,
                       {"6_params_positions": 6 * params * positions, "6_params_real_tokens": 6 * params * real_tokens},
                       "trainer.update: policy forward + backward over every position of the padded batch "
                       "(bf16 autocast when resolved_precision is bf16) and one AdamW step"),
        "generation": part(gen_flops, gen_secs, gen_ops,
                           {"2_params_positions": 2 * params * gen_positions,
                            "2_params_real_tokens": 2 * params * (prompt_tokens + sampled_tokens)},
                           "trainer.sample: KV-cache decoding under the run's precision, one token per row per step: "
                           "small matmuls, memory- and latency-bound; a low share of the peak is expected"),
        "scoring": part(score_flops, score_secs, score_ops,
                        {"2_params_positions": 2 * params * positions},
                        "trainer.make_rollout: the reference's no-grad forward (autocast; the policy's log-probs come "
                        "from the sampler) plus the pycodestyle scorer (CPU, no FLOPs counted)"),
    }
    rollout_med = result["generation"]["seconds_median"] + result["scoring"]["seconds_median"]
    result["rollout"] = {"counted_flops": gen_flops + score_flops, "seconds_median": rollout_med,
                         "achieved_flops_per_s": (gen_flops + score_flops) / rollout_med,
                         "note": "trainer.rollout = generation + scoring (sum of their medians)"}
    it_secs = rollout_med + result["update"]["seconds_median"]
    result["iteration"] = {"counted_flops": gen_flops + score_flops + upd_flops, "seconds": it_secs,
                           "achieved_flops_per_s": (gen_flops + score_flops + upd_flops) / it_secs,
                           "note": "one RL iteration: rollout + update"}
    trainer.close()
    return result


def fmt_rate(x: float) -> str:
    return f"{x / 1e12:.3f} TFLOP/s" if x >= 1e12 else f"{x / 1e9:.1f} GFLOP/s"


def tables(report: dict) -> str:
    m, peak, tr = report["machine"], report["matmul_peak"], report["training"]
    desc = f"{m['cpu']}, {m['cpu_count']} CPUs, {m['threads']} threads, torch {m['torch']}"
    if "gpu" in m:
        desc = f"{m['gpu']} (CUDA {m['cuda']}); host {desc}"
    lines = [f"Machine: {desc}; device {report['device']}", "",
             "| matmul | best n | peak | per size (best repeat) |", "|---|---|---|---|"]
    for name, p in peak.items():
        sizes = ", ".join(f"{r['n']}: {fmt_rate(r['flops_per_s_best'])}" for r in p["sizes"])
        lines.append(f"| {name} | {p['best_n']} | {fmt_rate(p['peak_flops_per_s'])} | {sizes} |")
    bf16, fp32 = peak["bf16"]["peak_flops_per_s"], peak["fp32"]["peak_flops_per_s"]
    c, t = tr["config"], tr["tokens"]
    lines += ["", f"tokenalign {c['objective']} on pep8: {t['samples']} samples ({c['prompts_per_iteration']} prompts x "
              f"{c['samples_per_prompt']}), <= {c['max_new_tokens']} new tokens, precision {c['resolved_precision']}; "
              f"{tr['params']:,} parameters; update batch {t['batch_shape'][0]} x {t['batch_shape'][1]} "
              f"({t['batch_real_tokens']:,} real tokens of {t['batch_positions']:,} positions)", "",
              "| step | counted FLOPs | analytic FLOPs | median s | achieved | % of bf16 peak | % of fp32 peak |",
              "|---|---|---|---|---|---|---|"]
    for key, label in (("update", "update (fwd + bwd + AdamW)"), ("generation", "rollout: generation (KV cache)"),
                       ("scoring", "rollout: scoring forwards + scorer"), ("rollout", "rollout (total)"),
                       ("iteration", "RL iteration (rollout + update)")):
        r = tr[key]
        secs = r.get("seconds_median", r.get("seconds"))
        analytic = next(iter(r.get("analytic", {}).items()), None)
        a = f"{analytic[1] / 1e9:.1f} G ({analytic[0].replace('_', ' ')})" if analytic else ""
        rate = r["achieved_flops_per_s"]
        lines.append(f"| {label} | {r['counted_flops'] / 1e9:.1f} G | {a} | {secs:.3f} | {fmt_rate(rate)} | "
                     f"{100 * rate / bf16:.1f}% | {100 * rate / fp32:.1f}% |")
    return "\n".join(lines)


def finite(x) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x) and x > 0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", choices=["cpu", "cuda"], default=None, help="default: cuda if available, else cpu")
    p.add_argument("--threads", type=int, default=0, help="torch threads on CPU (0: torch's default)")
    p.add_argument("--sizes", default=None, help="matmul sizes n (n x n x n); default 1024,2048,4096 (cuda: 2048,4096,8192)")
    p.add_argument("--matmul-repeats", type=int, default=5)
    p.add_argument("--matmul-warmup", type=int, default=2)
    p.add_argument("--matmul-inner", type=int, default=0, help="matmuls per timed repeat (0: 1 on cpu, 20 on cuda)")
    p.add_argument("--objective", default="rloo", choices=["rloo", "reinforce", "ppo"])
    p.add_argument("--prompts", type=int, default=16, help="prompts_per_iteration")
    p.add_argument("--samples", type=int, default=4, help="samples_per_prompt")
    p.add_argument("--max-new-tokens", type=int, default=128)
    p.add_argument("--mixed-precision", default="auto", choices=["auto", "no", "bf16", "fp16"])
    p.add_argument("--repeats", type=int, default=3, help="timed updates (after one warm-up)")
    p.add_argument("--rollout-repeats", type=int, default=2, help="timed generations and scorings (after a warm-up rollout)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="runs/bench-flops", help="folder for the trainer's run directory")
    p.add_argument("--json", default=None,
                   help="result file (default benchmarks/results/flops_<device>.json; --smoke: OUT/flops_<device>.json)")
    p.add_argument("--note", default="", help="free text stored in the JSON (e.g. what else ran on the machine)")
    p.add_argument("--smoke", action="store_true", help="tiny sizes: checks the benchmark runs end to end (< 30 s on CPU)")
    args = p.parse_args()
    if args.smoke:
        args.sizes, args.matmul_repeats, args.matmul_warmup = "256", 1, 1
        args.prompts, args.samples, args.max_new_tokens, args.repeats, args.rollout_repeats = 2, 2, 16, 1, 1
    if args.device == "cpu":
        os.environ["CUDA_VISIBLE_DEVICES"] = ""  # before torch: accelerate then places the trainer on the CPU
    import torch

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda but torch sees no GPU")
    if args.threads:
        torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()
    sizes = args.sizes or ("2048,4096,8192" if device == "cuda" else "1024,2048,4096")
    inner = args.matmul_inner or (20 if device == "cuda" else 1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    json_path = Path(args.json) if args.json else (out if args.smoke else Path("benchmarks/results")) / f"flops_{device}.json"

    load_before = os.getloadavg()
    t0 = time.perf_counter()
    peak = matmul_peak(device, [int(x) for x in sizes.split(",")], args.matmul_repeats, args.matmul_warmup, inner)
    training = measure_training(args, device, out / "trainer")
    bf16, fp32 = peak["bf16"]["peak_flops_per_s"], peak["fp32"]["peak_flops_per_s"]
    for key in ("update", "generation", "scoring", "rollout", "iteration"):
        rate = training[key]["achieved_flops_per_s"]
        training[key]["share_of_bf16_peak"] = rate / bf16
        training[key]["share_of_fp32_peak"] = rate / fp32
    upd = training["update"]
    upd["counted_over_analytic_6NT_positions"] = upd["counted_flops"] / upd["analytic"]["6_params_positions"]
    report = {"benchmark": "bench_flops", "device": device, "machine": machine(device, threads), "args": vars(args),
              "note": args.note, "load_avg_before": list(load_before), "load_avg_after": list(os.getloadavg()),
              "seconds": time.perf_counter() - t0, "matmul_peak": peak, "training": training}
    report["table"] = tables(report)
    bad = [k for k in ("update", "generation", "scoring") if not finite(training[k]["achieved_flops_per_s"])]
    bad += [k for k in ("bf16", "fp32") if not finite(peak[k]["peak_flops_per_s"])]
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(report, indent=2) + "\n")
    print(report["table"])
    print(f"\nwritten {json_path}")
    if bad:
        raise SystemExit(f"non-finite or zero measurements: {bad}")


if __name__ == "__main__":
    main()
