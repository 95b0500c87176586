"""Sampler speed: the categorical draw, and whole-batch generation on the pep8 task.

1. The draw alone: ``torch.multinomial`` vs inverse-CDF sampling (what the sampler uses,
   ``tokenalign.rollout.generate._draw``) on a batch of next-token distributions.
2. ``tokenalign.rollout.generate.generate`` on the shipped pep8 model, a training batch's
   shape (16 training prompts x 4 samples, T 1, <=128 tokens, the task's stop strings):
   generated tokens per second, best of ``--repeats``, in fp32 (evaluation) and under
   bf16 autocast (training with ``mixed_precision``).

    python benchmarks/bench_sampler.py --threads 2 --out runs/bench-sampler.json
    python benchmarks/bench_sampler.py --smoke --out runs/bench-sampler-smoke.json
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path


def _best_ms(fn, repeats: int) -> float:
    for _ in range(3):
        fn()
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best * 1e3


def bench_draw(rows: int, vocab: int, repeats: int) -> dict:
    import torch

    from tokenalign.rollout.generate import _draw

    scores = torch.randn(rows, vocab) * 3
    multinomial = _best_ms(lambda: torch.multinomial(torch.softmax(scores, -1), 1), repeats)
    inverse_cdf = _best_ms(lambda: _draw(scores), repeats)
    return {"rows": rows, "vocab": vocab, "multinomial_ms": multinomial, "inverse_cdf_ms": inverse_cdf,
            "speedup": multinomial / inverse_cdf}


def bench_generate(prompts: int, samples: int, max_new_tokens: int, repeats: int) -> dict:
    import torch

    from tokenalign.rollout.generate import SamplingConfig, generate
    from tokenalign.tasks.pep8 import STOP_STRINGS, base_model_path
    from tokenalign.tasks.pep8.prompts import load_prompts
    from tokenalign.utils.models import load_causal_lm

    model, tok = load_causal_lm(str(base_model_path()))
    batch = [p for p in load_prompts("train")[:prompts] for _ in range(samples)]
    cfg = SamplingConfig(max_new_tokens=max_new_tokens, temperature=1.0, top_p=1.0, batch_size=len(batch), stop=list(STOP_STRINGS))
    result = {"completions": len(batch), "max_new_tokens": max_new_tokens}
    # fp32 (what evaluation uses) and bf16 autocast (what training under mixed precision uses)
    for precision in ("fp32", "bf16"):
        autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16")
        runs = []
        with autocast:
            generate(model, tok, batch[: min(8, len(batch))], cfg, progress=False)  # warm-up
            for seed in range(repeats):
                t0 = time.perf_counter()
                out = generate(model, tok, batch, SamplingConfig(**{**cfg.__dict__, "seed": seed}), progress=False)
                seconds = time.perf_counter() - t0
                tokens = sum(len(s.generated_ids) for s in out)
                runs.append({"seconds": seconds, "tokens": tokens, "tokens_per_s": tokens / seconds,
                             "logprobs_recorded": all(s.logprobs is not None for s in out)})
        result[precision] = {"runs": runs, "best_tokens_per_s": max(r["tokens_per_s"] for r in runs)}
    return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="runs/bench-sampler.json")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--smoke", action="store_true")
    args = p.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    if args.smoke:
        draw, gen = bench_draw(8, 4096, 3), bench_generate(2, 2, 16, 1)
    else:
        draw, gen = bench_draw(64, 4096, 200), bench_generate(16, 4, 128, args.repeats)
    report = {"machine": f"{platform.machine()} {platform.processor()}".strip(), "threads": args.threads,
              "torch": torch.__version__, "draw": draw, "generate": gen}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"draw of {draw['rows']} x {draw['vocab']}: multinomial {draw['multinomial_ms']:.2f} ms, "
          f"inverse CDF {draw['inverse_cdf_ms']:.2f} ms ({draw['speedup']:.1f}x)")
    for precision in ("fp32", "bf16"):
        print(f"generate {gen['completions']} completions of <= {gen['max_new_tokens']} tokens, {precision}: "
              f"{gen[precision]['best_tokens_per_s']:.0f} tokens/s (best of {len(gen[precision]['runs'])})")


if __name__ == "__main__":
    main()
