"""One RL iteration on one GPU: tokenalign against TRL's GRPOTrainer, with and without vLLM.

For any causal LM (a Hugging Face model id or folder), every contender runs the same
iteration: ``--prompts`` prompts x ``--generations`` samples of at most ``--max-new-tokens``
tokens at temperature 1 (no stop strings: rows end at EOS or the limit), one reward
function (cheap, so scoring does not count), a reference pass (KL coefficient
``--kl-coef``, TRL's ``beta``), one optimizer step; same learning rate, precision (fp32
weights under bf16 autocast on a GPU, ``--dtype`` to change) and seed. Contenders:

- ``tokenalign``: ``PolicyTrainer`` with RLOO (sequence-level, GRPO's like), the HF sampler;
- ``tokenalign-vllm``: the same with ``sampling.backend: vllm`` (colocated engine,
  ``--vllm-memory`` of the GPU; its weights synced after the optimizer step);
- ``trl-grpo``: TRL's ``GRPOTrainer`` (``gradient_checkpointing`` off, as tokenalign runs);
- ``trl-grpo-vllm``: the same with ``use_vllm=True, vllm_mode="colocate"``.

The vLLM contenders run where vLLM is installed and a GPU is there (or when named in
``--contenders``). Each contender runs in its own process, so its peak memory is its own.
``--iterations`` iterations run; the first is a warm-up, the median of the others is
reported:

- **sampled tokens/s**: generated tokens / sampling seconds (tokenalign: ``trainer.sample``;
  TRL: its ``_generate``, which includes its vLLM weight sync);
- **update tokens/s**: the batch's real tokens (prompt + completion) / update seconds
  (tokenalign: ``trainer.update`` with the vLLM sync; TRL: the step minus
  ``_generate_and_score_completions``);
- **MFU** = achieved FLOP/s / the card's peak dense bf16 FLOP/s, with bench_flops.py's
  analytic counts: 6 x parameters x real tokens for the update (forward + backward),
  2 x parameters x real tokens for each forward (sampling, reference, policy log-probs),
  attention's own FLOPs not counted. The peak comes from ``PEAK_BF16`` by the card's name
  (``--peak-flops`` overrides; on a CPU only the override gives an MFU);
- **peak memory**: ``torch.cuda.max_memory_allocated`` (vLLM's KV cache included where it
  runs in-process); peak RSS on a CPU.

Run on a GPU machine (``pip install -e ".[bench]"``; ``pip install vllm`` for the vLLM rows):

    python benchmarks/gpu_rl_iteration.py --model Qwen/Qwen2.5-0.5B-Instruct
    python benchmarks/gpu_rl_iteration.py --model Qwen/Qwen2.5-1.5B-Instruct --prompts 32 --generations 8 --max-new-tokens 512
    python benchmarks/gpu_rl_iteration.py --smoke --out runs/gpu-rl-smoke     # CPU, the shipped pep8 model, < 30 s

It writes ``benchmarks/results/gpu_rl_iteration_<card>.json`` and ``.md`` (``--smoke``: into
``--out``, never over a real result) and prints the markdown table.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import multiprocessing as mp
import platform
import re
import resource
import statistics
import sys
import time
from pathlib import Path

# Dense bf16 tensor-core peaks (no sparsity), FLOP/s, by a pattern of torch.cuda.get_device_name().
# First match wins: the PCIe/NVL parts before the SXM default.
PEAK_BF16: list[tuple[str, float]] = [
    (r"H100.*(PCIe)", 756e12),
    (r"H100.*NVL", 835e12),
    (r"H100", 989e12),  # SXM
    (r"H200", 989e12),
    (r"GH200", 989e12),
    (r"A100", 312e12),
    (r"L40S", 362e12),
    (r"\bL4\b", 121e12),
    (r"A10G", 70e12),
]


def peak_flops(device_name: str, override: float | None) -> float | None:
    """The card's peak dense bf16 FLOP/s (``override`` wins; None when unknown)."""
    if override:
        return override
    for pattern, peak in PEAK_BF16:
        if re.search(pattern, device_name):
            return peak
    return None


def say(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def _sync() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def load_prompts(args) -> list[str]:
    """``--prompts`` prompts: lines (or JSONL ``prompt`` fields) of ``--prompts-file``, else the
    pep8 task's training prompts (function headers), repeated as needed."""
    if args.prompts_file:
        lines = [x for x in Path(args.prompts_file).read_text().splitlines() if x.strip()]
        pool = [json.loads(x)["prompt"] if x.lstrip().startswith("{") else x for x in lines]
    else:
        from tokenalign.tasks.pep8.prompts import load_prompts as pep8_prompts

        pool = pep8_prompts("train")
    return (pool * (args.prompts // len(pool) + 1))[: args.prompts]


def reward_function(prompts, completions, **kwargs) -> list[float]:
    """Cheap and the same for every contender: completions near 200 characters score best."""
    return [-abs(len(c) - 200) / 200 for c in completions]


def load_model(args):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[args.dtype]
    tok = AutoTokenizer.from_pretrained(args.model)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=dtype)
    return model, tok


def count_tokens(tok, prompts: list[str]) -> list[int]:
    return [len(tok(p, add_special_tokens=False)["input_ids"]) for p in prompts]


# ---- contenders -----------------------------------------------------------------------------
def run_tokenalign(args, backend: str) -> dict:
    """``--iterations`` iterations of tokenalign's PolicyTrainer (RLOO), each timed in its parts."""
    import torch

    from tokenalign.policy.config import TrainConfig
    from tokenalign.policy.rewards import RewardOutput
    from tokenalign.policy.trainer import PolicyTrainer
    from tokenalign.rollout.generate import SamplingSettings

    policy, tok = load_model(args)
    ref, _ = load_model(args)
    prompts = load_prompts(args)

    def reward(samples):
        return RewardOutput(reward_function([s.prompt for s in samples], [s.completion for s in samples]))

    cuda = torch.cuda.is_available()
    cfg = TrainConfig(objective="rloo", iterations=args.iterations, prompts_per_iteration=args.prompts,
                      samples_per_prompt=args.generations, lr=args.lr, kl_coef=args.kl_coef, seed=args.seed, save_every=0,
                      mixed_precision="bf16" if cuda and args.dtype == "fp32" else "no",
                      sampling=SamplingSettings(max_new_tokens=args.max_new_tokens, batch_size=args.prompts * args.generations,
                                                backend=backend, vllm_gpu_memory_utilization=args.vllm_memory,
                                                token_healing="off"))
    trainer = PolicyTrainer(cfg, policy, tok, reward, prompts, ref_policy=ref)
    params = sum(p.numel() for p in trainer.unwrapped_policy.parameters())
    rows = []
    for it in range(args.iterations):
        repeated = [p for p in trainer.iteration_prompts(it) for _ in range(args.generations)]
        _sync()
        t0 = time.perf_counter()
        samples = trainer.sample(repeated, seed=args.seed * 1000 + it)
        _sync()
        t1 = time.perf_counter()
        ro = trainer.make_rollout(samples, sampled_by="policy")
        _sync()
        t2 = time.perf_counter()
        trainer.update(ro)
        _sync()
        t3 = time.perf_counter()
        sampled = sum(len(s.generated_ids) for s in samples)
        real = int(ro.batch.attention_mask.sum())
        forwards = 1 + (backend == "vllm")  # the reference, and the policy's log-probs of vLLM's samples
        rows.append({"sample_s": t1 - t0, "score_s": t2 - t1, "update_s": t3 - t2, "iteration_s": t3 - t0,
                     "sampled_tokens": sampled, "real_tokens": real, "forward_passes_after_sampling": forwards})
        say(f"tokenalign[{backend}] iteration {it}: sample {t1 - t0:.2f}s, score {t2 - t1:.2f}s, update {t3 - t2:.2f}s")
    trainer.close()
    return {"params": params, "iterations": rows}


def run_trl(args, use_vllm: bool) -> dict:
    """``--iterations`` steps of TRL's GRPOTrainer, its generation and rollout timed by wrapping them."""
    import torch
    from datasets import Dataset
    from transformers import TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    model, tok = load_model(args)
    tok.padding_side = "left"
    prompts = load_prompts(args)
    n = args.prompts * args.generations
    cuda = torch.cuda.is_available()
    extra = {"use_vllm": True, "vllm_mode": "colocate", "vllm_gpu_memory_utilization": args.vllm_memory} if use_vllm else {}
    config = GRPOConfig(
        output_dir=str(Path(args.out) / ("trl-grpo-vllm" if use_vllm else "trl-grpo")), per_device_train_batch_size=n,
        num_generations=args.generations, max_completion_length=args.max_new_tokens, temperature=1.0, top_p=1.0,
        learning_rate=args.lr, beta=args.kl_coef, max_steps=args.iterations, steps_per_generation=1, num_iterations=1,
        gradient_accumulation_steps=1, logging_steps=1, save_strategy="no", report_to=[], use_cpu=not cuda,
        bf16=cuda and args.dtype == "fp32", seed=args.seed, lr_scheduler_type="constant", warmup_steps=0,
        shuffle_dataset=False, gradient_checkpointing=False, **extra)
    trainer = GRPOTrainer(model=model, reward_funcs=reward_function, args=config,
                          train_dataset=Dataset.from_dict({"prompt": prompts * args.iterations}), processing_class=tok)
    times: dict[str, list[float]] = {"generate": [], "rollout": [], "step": []}

    def timed(name: str, fn):
        def wrapper(*a, **k):
            _sync()
            t0 = time.perf_counter()
            out = fn(*a, **k)
            _sync()
            times[name].append(time.perf_counter() - t0)
            return out
        return wrapper

    trainer._generate = timed("generate", trainer._generate)
    trainer._generate_and_score_completions = timed("rollout", trainer._generate_and_score_completions)

    class StepTimer(TrainerCallback):
        def on_step_begin(self, *a, **k):
            _sync()
            self.t0 = time.perf_counter()

        def on_step_end(self, *a, **k):
            _sync()
            times["step"].append(time.perf_counter() - self.t0)

    trainer.add_callback(StepTimer())
    trainer.train()
    logs = [x for x in trainer.state.log_history if "completions/mean_length" in x]
    prompt_tokens = sum(count_tokens(tok, prompts)) * args.generations
    rows = []
    for it, (gen, ro, step, log) in enumerate(zip(times["generate"], times["rollout"], times["step"], logs)):
        sampled = log["completions/mean_length"] * n
        rows.append({"sample_s": gen, "score_s": ro - gen, "update_s": step - ro, "iteration_s": step,
                     "sampled_tokens": sampled, "real_tokens": prompt_tokens + sampled,
                     # the reference; the old log-probs (TRL computes them for its vLLM importance correction)
                     "forward_passes_after_sampling": (args.kl_coef > 0) + use_vllm})
        say(f"trl-grpo{'-vllm' if use_vllm else ''} step {it}: generate {gen:.2f}s, rollout {ro:.2f}s, step {step:.2f}s")
    return {"params": sum(p.numel() for p in trainer.model.parameters()), "iterations": rows}


def contender(kind: str, args, queue) -> None:
    import logging

    import torch

    logging.basicConfig(level=logging.WARNING)
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
        runs = {"tokenalign": lambda: run_tokenalign(args, "hf"), "tokenalign-vllm": lambda: run_tokenalign(args, "vllm"),
                "trl-grpo": lambda: run_trl(args, False), "trl-grpo-vllm": lambda: run_trl(args, True)}
        result = runs[kind]()
        result["peak_memory_gib"] = (torch.cuda.max_memory_allocated() if torch.cuda.is_available()
                                     else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024) / 2**30
        result["memory_kind"] = "torch.cuda.max_memory_allocated" if torch.cuda.is_available() else "peak RSS"
        queue.put(result)
    except Exception as e:  # noqa: BLE001 - reported in the table, the other contenders still run
        import traceback

        traceback.print_exc()
        queue.put({"error": f"{type(e).__name__}: {e}".splitlines()[0]})


# ---- summary ----------------------------------------------------------------------------------
def summarize(result: dict, peak: float | None) -> dict:
    """Medians over the timed iterations (all after the first; the only one when there is one)."""
    rows = result["iterations"][1:] or result["iterations"]
    med = {k: statistics.median(r[k] for r in rows) for k in rows[0]}
    n = result["params"]
    update_flops = 6 * n * med["real_tokens"]
    iteration_flops = update_flops + 2 * n * med["real_tokens"] * (1 + med["forward_passes_after_sampling"])
    out = {"sampled_tokens_per_s": med["sampled_tokens"] / med["sample_s"],
           "update_tokens_per_s": med["real_tokens"] / med["update_s"],
           "iteration_s": med["iteration_s"], "sample_s": med["sample_s"], "score_s": med["score_s"],
           "update_s": med["update_s"], "sampled_tokens": med["sampled_tokens"], "real_tokens": med["real_tokens"],
           "update_flops": update_flops, "iteration_flops": iteration_flops,
           "update_mfu": update_flops / med["update_s"] / peak if peak else None,
           "iteration_mfu": iteration_flops / med["iteration_s"] / peak if peak else None,
           "peak_memory_gib": result["peak_memory_gib"], "timed_iterations": len(rows)}
    return out


def table(report: dict) -> str:
    a = report["args"]
    autocast = " under bf16 autocast" if report["device"] != "cpu" and a["dtype"] == "fp32" else ""
    peak = (f"peak {report['peak_flops'] / 1e12:.3g} TFLOP/s bf16" if report["peak_flops"]
            else "no peak FLOP/s known (MFU not computed)")
    lines = [f"{report['device']}; model `{a['model']}` ({report.get('params', 0):,} parameters); {a['prompts']} prompts x "
             f"{a['generations']} samples, <= {a['max_new_tokens']} new tokens; weights {a['dtype']}{autocast}; {peak}",
             "",
             "| contender | s / iteration | sampled tokens / s | update tokens / s | update MFU | iteration MFU "
             "| peak memory (GiB) |",
             "|---|---|---|---|---|---|---|"]
    for kind, r in report["results"].items():
        if "error" in r:
            lines.append(f"| {kind} | failed: {r['error']} | | | | | |")
            continue
        s = r["summary"]

        def mfu(x: float | None) -> str:
            return f"{100 * x:.1f}%" if x is not None else "n/a"

        lines.append(f"| {kind} | {s['iteration_s']:.2f} | {s['sampled_tokens_per_s']:.0f} | {s['update_tokens_per_s']:.0f} | "
                     f"{mfu(s['update_mfu'])} | {mfu(s['iteration_mfu'])} | {s['peak_memory_gib']:.2f} |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=None, help="HF model id or folder (default: the shipped pep8 model)")
    p.add_argument("--contenders", default=None,
                   help="comma-separated: tokenalign, tokenalign-vllm, trl-grpo, trl-grpo-vllm (default: the vLLM ones "
                        "only where vLLM is installed and a GPU is there)")
    p.add_argument("--prompts", type=int, default=16)
    p.add_argument("--generations", type=int, default=8)
    p.add_argument("--max-new-tokens", type=int, default=256)
    p.add_argument("--prompts-file", default=None, help="text lines or JSONL with a prompt field (default: pep8 prompts)")
    p.add_argument("--iterations", type=int, default=3, help="the first is a warm-up")
    p.add_argument("--lr", type=float, default=1e-6)
    p.add_argument("--kl-coef", type=float, default=0.04)
    p.add_argument("--dtype", choices=["fp32", "bf16"], default="fp32",
                   help="weights: fp32 (bf16 autocast on a GPU) or bf16 (models that do not fit in fp32 with AdamW)")
    p.add_argument("--vllm-memory", type=float, default=0.3, help="GPU memory share of each colocated vLLM engine")
    p.add_argument("--peak-flops", type=float, default=None, help="peak FLOP/s for the MFU (default: by the card's name)")
    p.add_argument("--threads", type=int, default=0, help="torch threads on a CPU (0: torch's default)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="runs/gpu-rl-iteration", help="scratch folder (TRL's output_dir)")
    p.add_argument("--json", default=None, help="result file (default benchmarks/results/gpu_rl_iteration_<card>.json)")
    p.add_argument("--smoke", action="store_true", help="CPU-sized: the pep8 model, 2 x 2 samples of 8 tokens, 2 iterations")
    args = p.parse_args()
    if args.smoke:
        args.prompts, args.generations, args.max_new_tokens, args.iterations = 2, 2, 8, 2
    if args.model is None:
        from tokenalign.tasks.pep8 import base_model_path

        args.model = str(base_model_path())
    import torch

    cuda = torch.cuda.is_available()
    device = torch.cuda.get_device_name(0) if cuda else "cpu"
    has_vllm = importlib.util.find_spec("vllm") is not None
    kinds = (args.contenders.split(",") if args.contenders
             else ["tokenalign", "trl-grpo"] + (["tokenalign-vllm", "trl-grpo-vllm"] if has_vllm and cuda else []))
    peak = peak_flops(device, args.peak_flops)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    tag = re.sub(r"[^A-Za-z0-9]+", "_", device.replace("NVIDIA ", "")).strip("_").lower()
    folder = out if args.smoke else Path("benchmarks/results")
    json_path = Path(args.json) if args.json else folder / f"gpu_rl_iteration_{tag}.json"
    ctx = mp.get_context("spawn")
    results = {}
    for kind in kinds:
        say(f"{kind} ...")
        queue = ctx.Queue()
        proc = ctx.Process(target=contender, args=(kind, args, queue))
        proc.start()
        result = queue.get()
        proc.join()
        if "error" not in result:
            result["summary"] = summarize(result, peak)
        results[kind] = result
    params = next((r["params"] for r in results.values() if "params" in r), 0)
    report = {"benchmark": "gpu_rl_iteration", "device": device, "cuda": torch.version.cuda, "torch": torch.__version__,
              "python": platform.python_version(), "vllm_installed": has_vllm, "peak_flops": peak, "params": params,
              "args": vars(args), "results": results}
    report["table"] = table(report)
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(report, indent=2) + "\n")
    json_path.with_suffix(".md").write_text(report["table"] + "\n")
    print(report["table"])
    print(f"\nwritten {json_path} and {json_path.with_suffix('.md')}")
    failed = [k for k, r in results.items() if "error" in r]
    bad = [k for k, r in results.items() if "summary" in r and not all(
        math.isfinite(v) and v > 0 for v in (r["summary"]["sampled_tokens_per_s"], r["summary"]["update_tokens_per_s"]))]
    if failed or bad:
        raise SystemExit(f"failed: {failed}; non-finite or zero: {bad}")


if __name__ == "__main__":
    main()
