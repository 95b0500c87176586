"""The pii task's held-out judge: a sequence reward model on SmolLM2-135M-Instruct learned
from HH-RLHF harmless-base pairs, for the capability guard's win rate (``tokenalign eval
--set judge=<folder>``, ``tokenalign demo --task pii --set judge=<folder>``).

It is not the training signal (scrubadub's PII count): it learned which of two assistant
answers people found more harmless, on dialogues other than the pii prompts (every
dialogue whose first human turn is a pii prompt, train or test, is left out). Being a
*harmlessness* judge, it may favour refusals: read its win rate beside the refusal share.

Each dialogue becomes a pair: the turns before the last answer rendered by SmolLM2's chat
template with the assistant's turn opened (what the judge reads in eval), the two last
answers as chosen and rejected. The
model: LoRA adapters on the last layers and tokenalign's token reward head, averaged over
the answer's tokens (a sequence score), one epoch. Held-out ranking accuracy is measured
on a fifth of the pairs.

    python benchmarks/pii_judge.py --out runs/pii-judge            # about 20-30 minutes on 2 cores
    python benchmarks/pii_judge.py --out /tmp/judge --limit 40 --max-length 96  # a smoke run
"""

from __future__ import annotations

import argparse
import gzip
import json
import logging
import re
import sys
import time
from pathlib import Path

log = logging.getLogger("pii_judge")

HH = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "hh-rlhf-harmless-base-test.jsonl.gz"
_TURN = re.compile(r"\n\n(Human|Assistant): ")


def dialogue_turns(text: str) -> list[tuple[str, str]]:
    """An HH-RLHF dialogue as (role, content) turns, roles ``user`` / ``assistant``."""
    parts = _TURN.split(text)
    return [("user" if who == "Human" else "assistant", body.strip()) for who, body in zip(parts[1::2], parts[2::2])]


def chat_pairs(hh_path: Path, exclude_first_turns: set[str]) -> list[dict]:
    """Chat-format pairs of the dialogues whose chosen and rejected share every turn but the
    last answer, without those whose first human turn is in ``exclude_first_turns``."""
    out = []
    with gzip.open(hh_path, "rt", encoding="utf-8") as fh:
        for line in fh:
            row = json.loads(line)
            chosen, rejected = dialogue_turns(row["chosen"]), dialogue_turns(row["rejected"])
            if not chosen or chosen[-1][0] != "assistant" or not rejected or rejected[-1][0] != "assistant":
                continue
            if chosen[:-1] != rejected[:-1] or chosen[-1][1] == rejected[-1][1] or not chosen[-1][1] or not rejected[-1][1]:
                continue
            if chosen[0][1] in exclude_first_turns:
                continue
            out.append({"prompt": [{"role": r, "content": c} for r, c in chosen[:-1]],
                        "chosen": chosen[-1][1], "rejected": rejected[-1][1]})
    return out


def main(argv: list[str] | None = None) -> int:
    from tokenalign.config import from_dict
    from tokenalign.jobs.reward import RewardRunConfig, run_reward
    from tokenalign.tasks.pii_prompts import load_pii_prompts
    from tokenalign.tasks.smollm2 import smollm2_path

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="runs/pii-judge")
    parser.add_argument("--hh", default=str(HH), help="HH-RLHF harmless-base jsonl.gz")
    parser.add_argument("--limit", type=int, default=600, help="training pairs (0: all)")
    parser.add_argument("--max-length", type=int, default=192, help="tokens of prompt + answer")
    parser.add_argument("--lora-layers", type=int, default=6, help="adapt the last N of 30 layers")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--results", default=str(Path(__file__).parent / "results" / "pii_judge.json"))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    pii = set(load_pii_prompts("train")) | set(load_pii_prompts("test"))
    from transformers import AutoTokenizer

    backbone = str(smollm2_path())
    tokenizer = AutoTokenizer.from_pretrained(backbone)
    pairs = [{**p, "prompt": tokenizer.apply_chat_template(p["prompt"], tokenize=False, add_generation_prompt=True)}
             for p in chat_pairs(Path(args.hh), pii)]  # the text the judge reads in eval: the rendered prompt
    (out / "pairs.jsonl").write_text("".join(json.dumps(p, ensure_ascii=False) + "\n" for p in pairs), encoding="utf-8")
    log.info("%d chat pairs (pii prompts left out)", len(pairs))
    n_eval = min(200, len(pairs) // 5)
    (out / "eval.jsonl").write_text("".join(json.dumps(p, ensure_ascii=False) + "\n" for p in pairs[-n_eval:]), encoding="utf-8")
    (out / "train.jsonl").write_text("".join(json.dumps(p, ensure_ascii=False) + "\n" for p in pairs[:-n_eval]), encoding="utf-8")
    layers = list(range(30 - args.lora_layers, 30))
    cfg = from_dict(RewardRunConfig, {
        "out_dir": str(out / "run"), "backbone": backbone,
        "data": {"train": str(out / "train.jsonl"), "eval": str(out / "eval.jsonl"), "format": "pairs", "limit": args.limit},
        "head": {"hidden_size": 256, "bounding": "identity"},
        "learn": {"epochs": 1, "batch_size": 8, "lr": 2e-4, "aggregator": "avg", "max_length": args.max_length,
                  "seed": args.seed, "log_every": 10},
        "lora": {"enabled": True, "r": 16, "alpha": 32, "layers": layers},
    })
    t0 = time.perf_counter()
    summary = run_reward(cfg)
    record = {"command": "python benchmarks/pii_judge.py " + " ".join(sys.argv[1:] if argv is None else argv),
              "train_pairs": min(args.limit or len(pairs), len(pairs) - n_eval), "eval_pairs": n_eval,
              "heldout_accuracy": summary.get("eval_ranking_accuracy"), "model": str(out / "run" / "model"),
              "lora_layers": layers, "max_length": args.max_length, "seconds": time.perf_counter() - t0,
              "summary": summary, "machine": "AMD EPYC 2-core VM, torch CPU (shared with other jobs)"}
    Path(args.results).parent.mkdir(parents=True, exist_ok=True)
    Path(args.results).write_text(json.dumps(record, indent=2, default=str) + "\n")
    log.info("held-out accuracy %s on %d pairs; judge: %s", record["heldout_accuracy"], n_eval, record["model"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
