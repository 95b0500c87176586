"""The kernel swaps of ``tokenalign.utils.kernels``, each against what it replaces.

1. Attention forward + backward (a training pass) of one layer's shapes, bf16 inputs:
   SDPA in bf16 (what autocast runs) vs SDPA in fp32 (``tokenalign_sdpa`` on a CPU), with
   a left-padding causal mask.
2. GELU forward + backward on the MLP's activations: GPT-2's ``gelu_new`` (Python
   arithmetic) vs transformers' fused ``GELUTanh``.
3. One AdamW step over the shipped pep8 model's parameters: torch's per-tensor loop vs
   its fused kernel.

Each is timed as the best of ``--repeats`` after a warm-up.

    python benchmarks/bench_kernels.py --threads 1 --out runs/bench-kernels.json
    python benchmarks/bench_kernels.py --smoke --out runs/bench-kernels-smoke.json
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path


def _best_ms(fn, repeats: int) -> float:
    for _ in range(2):
        fn()
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best * 1e3


def bench_attention(rows: int, heads: int, length: int, dim: int, repeats: int) -> dict:
    import torch
    import torch.nn.functional as F

    g = torch.Generator().manual_seed(0)
    pad = torch.randint(0, length // 3, (rows,), generator=g)
    causal = torch.ones(length, length, dtype=torch.bool).tril()
    mask = (causal[None] & (torch.arange(length)[None] >= pad[:, None])[:, None, :])[:, None]
    mask |= torch.eye(length, dtype=torch.bool)  # a padding query attends to itself (no empty row)
    q, k, v = (torch.randn(rows, heads, length, dim, generator=g).bfloat16().requires_grad_() for _ in range(3))
    grad = torch.randn(rows, heads, length, dim, generator=g).bfloat16()

    def bf16() -> None:
        F.scaled_dot_product_attention(q, k, v, attn_mask=mask).backward(grad)

    def fp32() -> None:
        out = F.scaled_dot_product_attention(q.float(), k.float(), v.float(), attn_mask=mask)
        out.to(torch.bfloat16).backward(grad)

    result = {"shape": [rows, heads, length, dim], "bf16_ms": _best_ms(bf16, repeats), "fp32_ms": _best_ms(fp32, repeats)}
    result["speedup"] = result["bf16_ms"] / result["fp32_ms"]
    return result


def bench_gelu(rows: int, width: int, repeats: int) -> dict:
    import torch
    from transformers.activations import GELUTanh, NewGELUActivation

    x = torch.randn(rows, width).requires_grad_()
    grad = torch.randn(rows, width)
    python_gelu, fused_gelu = NewGELUActivation(), GELUTanh()
    result = {"shape": [rows, width],
              "gelu_new_ms": _best_ms(lambda: python_gelu(x).backward(grad), repeats),
              "fused_ms": _best_ms(lambda: fused_gelu(x).backward(grad), repeats)}
    result["speedup"] = result["gelu_new_ms"] / result["fused_ms"]
    return result


def bench_adamw(repeats: int) -> dict:
    import torch

    from tokenalign.tasks.pep8 import base_model_path
    from tokenalign.utils.kernels import fused_optimizer_kwargs
    from tokenalign.utils.models import load_causal_lm

    model, _ = load_causal_lm(str(base_model_path()))
    params = list(model.parameters())
    for p in params:
        p.grad = torch.randn_like(p)
    loop = torch.optim.AdamW(params, lr=1e-5, foreach=False)
    fused = torch.optim.AdamW(params, lr=1e-5, **fused_optimizer_kwargs("cpu"))
    result = {"parameters": sum(p.numel() for p in params),
              "loop_ms": _best_ms(loop.step, repeats), "fused_ms": _best_ms(fused.step, repeats)}
    result["speedup"] = result["loop_ms"] / result["fused_ms"]
    return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="runs/bench-kernels.json")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--smoke", action="store_true")
    args = p.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    repeats = 2 if args.smoke else args.repeats
    # A training chunk of the pep8 model: 16 rows x 4 heads x ~160 positions x 64; MLP 16 x 160 x 1024.
    rows, length = (2, 32) if args.smoke else (16, 160)
    report = {"machine": f"{platform.machine()} {platform.processor()}".strip(), "threads": args.threads,
              "torch": torch.__version__,
              "attention": bench_attention(rows, 4, length, 64, repeats),
              "gelu": bench_gelu(rows * length, 1024, repeats),
              "adamw": bench_adamw(repeats)}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    a, g, o = report["attention"], report["gelu"], report["adamw"]
    print(f"attention fwd+bwd {a['shape']}: bf16 {a['bf16_ms']:.1f} ms, fp32 {a['fp32_ms']:.1f} ms ({a['speedup']:.2f}x)")
    print(f"GELU fwd+bwd {g['shape']}: gelu_new {g['gelu_new_ms']:.1f} ms, fused {g['fused_ms']:.1f} ms ({g['speedup']:.2f}x)")
    print(f"AdamW step, {o['parameters']:,} parameters: loop {o['loop_ms']:.1f} ms, fused {o['fused_ms']:.1f} ms "
          f"({o['speedup']:.2f}x)")


if __name__ == "__main__":
    main()
