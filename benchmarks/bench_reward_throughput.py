"""Reward-learning throughput and peak memory: tokenalign vs TRL's RewardTrainer.

Same backbone (a GPT-2 built from one config and one seed), same tokenizer, same
preference pairs, same batch size, maximum length and number of optimizer steps, on the
same machine, in one run. Each contender trains in its own spawned process so that its
peak resident memory is its own. Throughput is measured after a few warm-up steps:
pairs/s and real (non-padding) tokens/s of the pairs' ``prompt + response`` sequences.

Contenders: TRL's defaults on CPU (fp32, gradient checkpointing), TRL bf16 with and
without gradient checkpointing, tokenalign's defaults (bf16 autocast where the CPU has
it, shared-prompt rows) and tokenalign with ``gradient_checkpointing``. ``--repeats N``
runs the whole rotation N times (contenders interleaved, so a noisy neighbour hits all
of them alike) and reports each contender's median and best run.

    python benchmarks/bench_reward_throughput.py --data tests/data/hh-rlhf-harmless-base-test-200.jsonl

Needs the ``[bench]`` extra (TRL). Results go to benchmarks/results/reward_throughput.json
and are summarised in benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import resource
import statistics
import time
from pathlib import Path


def build_tokenizer(texts: list[str], vocab_size: int):
    """A byte-level BPE trained on the benchmark texts (no hub access needed)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=["<|endoftext|>", "<|pad|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>", pad_token="<|pad|>")


def gpt2_config(vocab_size: int, max_length: int, pad_id: int):
    from transformers import GPT2Config

    return GPT2Config(vocab_size=vocab_size, n_embd=256, n_layer=4, n_head=4, n_positions=max_length,
                      pad_token_id=pad_id, bos_token_id=0, eos_token_id=0, num_labels=1)


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def run_tokenalign(args, pairs, tok_dir, queue, checkpointing: bool = False, share_prompt: bool = True):
    import torch
    from transformers import AutoTokenizer, GPT2Model

    from tokenalign.rewards.learn import RankedExample, RewardLearnConfig, RewardLearner
    from tokenalign.rewards.model import TokenRewardModel

    torch.set_num_threads(args.threads)
    tok = AutoTokenizer.from_pretrained(tok_dir)
    torch.manual_seed(0)
    backbone = GPT2Model(gpt2_config(len(tok), args.max_length, tok.pad_token_id))
    model = TokenRewardModel(backbone)
    n = args.steps * args.batch_size
    train = [RankedExample(p, (c, r), (1.0, 0.0)) for p, c, r in pairs[:n]]
    cfg = RewardLearnConfig(epochs=1, batch_size=args.batch_size, max_length=args.max_length,
                            mixed_precision=args.mixed_precision, aggregator="avg",
                            gradient_checkpointing=checkpointing, share_prompt=share_prompt)
    learner = RewardLearner(model, tok, cfg)
    marks = {}

    def on_step(lr):
        if lr.step == args.warmup:
            marks["t0"], marks["c0"] = time.perf_counter(), time.process_time()
    learner.fit(train, on_step=on_step)
    seconds, cpu_seconds = time.perf_counter() - marks["t0"], time.process_time() - marks["c0"]
    measured = train[args.warmup * args.batch_size :]
    from tokenalign.utils.accel import resolve_mixed_precision

    options = [f"{cfg.mixed_precision}: {resolve_mixed_precision(cfg.mixed_precision)}"] + (["grad checkpointing"] if checkpointing else []) + ([] if share_prompt else ["share_prompt off"])
    queue.put({"name": f"tokenalign ({', '.join(options)})", "seconds": seconds, "cpu_seconds": cpu_seconds,
               "pairs": len(measured), "tokens": count_tokens(tok, measured, args.max_length),
               "peak_rss_mib": peak_rss_mib()})


def count_tokens(tok, examples, max_length):
    total = 0
    for ex in examples:
        p = len(tok(ex.prompt)["input_ids"])
        for resp in ex.responses:
            total += min(max_length, p + len(tok(resp, add_special_tokens=False)["input_ids"]))
    return total


def run_trl(args, pairs, tok_dir, queue, bf16: bool, checkpointing: bool):
    import torch
    from datasets import Dataset
    from transformers import AutoTokenizer, GPT2ForSequenceClassification, TrainerCallback
    from trl import RewardConfig, RewardTrainer

    from tokenalign.rewards.learn import RankedExample

    torch.set_num_threads(args.threads)
    tok = AutoTokenizer.from_pretrained(tok_dir)
    torch.manual_seed(0)
    model = GPT2ForSequenceClassification(gpt2_config(len(tok), args.max_length, tok.pad_token_id))
    n = args.steps * args.batch_size
    data = Dataset.from_list([{"prompt": p, "chosen": c, "rejected": r} for p, c, r in pairs[:n]])
    marks = {}

    class Timer(TrainerCallback):
        def on_step_end(self, a, state, control, **kw):
            if state.global_step == args.warmup:
                marks["t0"], marks["c0"] = time.perf_counter(), time.process_time()

    cfg = RewardConfig(
        output_dir=str(Path(tok_dir).parent / "trl-out"), use_cpu=True, bf16=bf16,
        gradient_checkpointing=checkpointing, per_device_train_batch_size=args.batch_size,
        max_steps=args.steps, max_length=args.max_length, learning_rate=5e-5, max_grad_norm=5.0,
        logging_steps=10_000, save_strategy="no", report_to=[], dataloader_num_workers=0,
        disable_tqdm=True, seed=0,
    )
    trainer = RewardTrainer(model=model, args=cfg, train_dataset=data, processing_class=tok, callbacks=[Timer()])
    trainer.train()
    seconds, cpu_seconds = time.perf_counter() - marks["t0"], time.process_time() - marks["c0"]
    measured = [RankedExample(p, (c, r), (1.0, 0.0)) for p, c, r in pairs[args.warmup * args.batch_size : n]]
    name = f"TRL RewardTrainer ({'bf16' if bf16 else 'fp32'}, {'grad checkpointing' if checkpointing else 'no checkpointing'})"
    queue.put({"name": name, "seconds": seconds, "cpu_seconds": cpu_seconds, "pairs": len(measured),
               "tokens": count_tokens(tok, measured, args.max_length), "peak_rss_mib": peak_rss_mib()})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="tests/data/hh-rlhf-harmless-base-test-200.jsonl")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--mixed-precision", default="auto")
    parser.add_argument("--repeats", type=int, default=1, help="run the whole rotation of contenders this many times")
    parser.add_argument("--ablation", action="store_true", help="also run tokenalign with share_prompt off")
    parser.add_argument("--out", default="benchmarks/results/reward_throughput.json")
    args = parser.parse_args()

    import tempfile

    from tokenalign.data import load_records

    records = load_records(args.data, "pairs").records
    pairs = [(r.prompt, r.chosen, r.rejected) for r in records]
    work = Path(tempfile.mkdtemp(prefix="bench-reward-"))
    tok = build_tokenizer([p + c + r for p, c, r in pairs], vocab_size=4096)
    tok.save_pretrained(work / "tok")
    # TRL drops pairs longer than max_length while tokenalign truncates them: keep only the
    # pairs that fit whole (with TRL's appended EOS), so both train on exactly the same tokens.
    def fits(p: str, c: str, r: str) -> bool:
        n_p = len(tok(p)["input_ids"])
        return all(n_p + len(tok(x, add_special_tokens=False)["input_ids"]) + 1 <= args.max_length for x in (c, r))

    pairs = [x for x in pairs if fits(*x)]
    print(f"{len(pairs)} of {len(records)} pairs fit in {args.max_length} tokens")
    while len(pairs) < args.steps * args.batch_size:
        pairs = pairs + pairs

    ctx = mp.get_context("spawn")
    runs = []
    contenders = [
        (run_trl, dict(bf16=False, checkpointing=True)),
        (run_trl, dict(bf16=True, checkpointing=False)),
        (run_trl, dict(bf16=True, checkpointing=True)),
        (run_tokenalign, {}),
        (run_tokenalign, dict(checkpointing=True)),
    ]
    if args.ablation:
        contenders.append((run_tokenalign, dict(share_prompt=False)))
    for repeat in range(args.repeats):
        for fn, kw in contenders:
            queue = ctx.Queue()
            proc = ctx.Process(target=fn, args=(args, pairs, str(work / "tok"), queue), kwargs=kw)
            proc.start()
            result = queue.get()
            proc.join()
            result["pairs_per_s"] = result["pairs"] / result["seconds"]
            result["tokens_per_s"] = result["tokens"] / result["seconds"]
            result["repeat"] = repeat
            result["load_avg_1min_after"] = os.getloadavg()[0]
            runs.append(result)
            print(json.dumps(result), flush=True)
    results = []
    for name in dict.fromkeys(r["name"] for r in runs):
        mine = sorted((r for r in runs if r["name"] == name), key=lambda r: r["pairs_per_s"])
        med = mine[(len(mine) - 1) // 2]  # the lower median: never flatters
        results.append({"name": name, "pairs_per_s_median": med["pairs_per_s"], "pairs_per_s_best": mine[-1]["pairs_per_s"],
                        "tokens_per_s_median": med["tokens_per_s"], "tokens_per_s_best": mine[-1]["tokens_per_s"],
                        "cpu_ms_per_pair_median": statistics.median(1000 * r["cpu_seconds"] / r["pairs"] for r in mine),
                        "peak_rss_mib_max": max(r["peak_rss_mib"] for r in mine), "runs": len(mine)})
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), platform.processor())
    report = {"machine": f"{cpu}, {os.cpu_count()} cores, {args.threads} threads", "args": vars(args),
              "results": results, "runs": runs}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print("\n| contender | pairs/s median (best) | real tokens/s median (best) | CPU ms/pair median | peak RSS (MiB, max) |")
    print("|---|---|---|---|---|")
    for r in results:
        print(f"| {r['name']} | {r['pairs_per_s_median']:.1f} ({r['pairs_per_s_best']:.1f}) | "
              f"{r['tokens_per_s_median']:,.0f} ({r['tokens_per_s_best']:,.0f}) | {r['cpu_ms_per_pair_median']:.0f} | "
              f"{r['peak_rss_mib_max']:,.0f} |")


if __name__ == "__main__":
    main()
