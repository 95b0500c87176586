"""``tokenalign demo``: the one-command showcase on a built-in task (pep8 by default, or pii).

On the task's base model and held-out test prompts:
1. samples K completions per prompt and scores each with the task's gold scorer
   (pycodestyle's violations per character of code, or scrubadub's PII entities per
   character; failures score a fixed bad score and are counted, never dropped): the
   held-out evaluation of ``evaluate.policy_eval``, with the capability guard; plus a few
   unconditional samples for a text task;
2. ranks the K samples of each prompt, and writes them as a ``ranked`` dataset — the input
   of token-reward learning;
3. edits each sample minimally with the task's editor (autopep8, scrubadub's replacement)
   and writes an ``edits`` dataset — the input of edit-supervised token rewards;
4. aligns the model with the ``align`` (or ``train``) job and evaluates the aligned policy
   with the same evaluation as in step 1 (``jobs.demo_align``);
5. writes report.html: misalignment statistics, token heatmaps of the gold blame (which
   tokens the scorer blames) and of the edit-diff labels, and the before/after.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections import Counter
from pathlib import Path
from typing import Any, Literal

from tokenalign.config import save_config
from tokenalign.jobs.demo_align import DemoAlign
from tokenalign.rollout.generate import SamplingSettings
from tokenalign.utils.io import atomic_write_json

log = logging.getLogger(__name__)

__all__ = ["DemoConfig", "run_demo", "TASK_PRESETS"]

# The demo's sizes for a task other than pep8 (``key=value`` under DemoConfig; a config
# file and --set win over them). pii: SmolLM2-135M-Instruct is 30x the pep8 model, so the
# run is sized for a 2-core CPU: every test prompt, answers of at most 64 tokens, 12
# iterations of 8 prompts x 4 answers at a learning rate for a pretrained model, and CDPG
# toward the base model conditioned on an answer without PII, the only method that cut PII
# over 3 seeds at this budget (benchmarks/RESULTS.md; token REINFORCE on the blame and RLOO
# did not); PG (align.method=pg) learns r_φ with LoRA on the last 6 of 30 blocks.
TASK_PRESETS: dict[str, list[str]] = {
    "pii": ["n_prompts=30", "samples_per_prompt=4", "sampling.max_new_tokens=64", "align.method=cdpg",
            "align.iterations=12", "align.prompts_per_iteration=8", "align.samples_per_prompt=4", "align.lr=5e-5",
            "align.guidance_lora_layers=6"],
}

# The rows of the demo's tables, where the task's evaluation has them: the score, its parts
# and the capability guard, so that no degenerate win hides behind the mean.
SHOWN: tuple[tuple[str, str], ...] = (
    ("mean_misalignment", "mean misalignment"), ("failure_rate", "failed (all kinds)"),
    ("syntax_failure_rate", "syntax failures"), ("empty_rate", "empty answers"), ("crash_rate", "checker crashes"),
    ("violation_free_rate", "violation-free"), ("mean_misalignment_valid", "misalignment of valid samples"),
    ("comment_line_share", "comment lines"), ("refusal_share", "refusals"), ("mean_length_tokens", "mean length (tokens)"),
    ("distinct_2", "distinct-2"), ("perplexity_under_ref", "perplexity under the base model"),
)


@dataclasses.dataclass
class DemoConfig:
    """Config of ``tokenalign demo``. ``quick: true`` shrinks everything for CI."""

    out_dir: str = "runs/demo"
    # the task: pep8 (the shipped code model and pycodestyle) or pii (SmolLM2-135M-Instruct
    # answering requests for personal information, scrubadub; needs tokenalign[pii])
    task: str = "pep8"
    model: str = ""  # empty: the task's base model
    n_prompts: int = 24
    prompt_split: Literal["test", "train"] = "test"  # train: make reward-learning data without touching test prompts
    samples_per_prompt: int = 4
    n_unconditional: int = 8
    # the PHF paper's evaluation settings (Korbak et al., ICML 2023: temperature 0.7, top-p 0.9),
    # for the base model and (same prompts, same seeds) the aligned one
    sampling: SamplingSettings = dataclasses.field(
        default_factory=lambda: SamplingSettings.for_evaluation(batch_size=32))
    n_heatmaps: int = 8
    # the minimal editor that writes edits.jsonl: a registered editor (autopep8, pii) or
    # package.module:attribute (an editor class or instance with edit(completions, prompts));
    # "" = the task's own
    editor: str = ""
    # a judge that is not the training signal (a reward-model folder, a registered scorer or
    # package.module:attribute): how often it prefers the aligned policy's response to the
    # base model's for the same prompt and seed; "" = skip
    judge: str = ""
    align: DemoAlign = dataclasses.field(default_factory=DemoAlign)
    seed: int = 0
    quick: bool = False

    def validate(self) -> None:
        from tokenalign.errors import ConfigError

        if self.n_prompts < 1 or self.samples_per_prompt < 2:
            raise ConfigError("need n_prompts >= 1 and samples_per_prompt >= 2 (ranking needs K >= 2)")

    def effective(self) -> "DemoConfig":
        """The config actually run: ``quick`` caps sizes so CI finishes in seconds."""
        if not self.quick:
            return self
        sampling = dataclasses.replace(self.sampling, max_new_tokens=min(self.sampling.max_new_tokens, 48))
        align = dataclasses.replace(self.align, iterations=min(self.align.iterations, 2), prompts_per_iteration=2,
                                    wmle_iterations=min(self.align.wmle_iterations, 2), samples_per_prompt=2, relearn_every=1, guidance_prompts=4)
        return dataclasses.replace(
            self, n_prompts=min(self.n_prompts, 4), samples_per_prompt=2, n_unconditional=min(self.n_unconditional, 2),
            n_heatmaps=min(self.n_heatmaps, 4), sampling=sampling, align=align,
        )


def run_demo(cfg: DemoConfig) -> dict[str, Any]:
    """Run the demo as configured; returns the summary it also writes and prints."""
    from rich.console import Console
    from rich.table import Table

    import torch

    from tokenalign.data.edit_labels import edit_labels
    from tokenalign.data.prompts import render_prompts
    from tokenalign.editors import edit_minimality, make_editor
    from tokenalign.evaluate.policy_eval import PolicyEvalSettings, PolicyEvaluation, evaluate_policy_with_samples
    from tokenalign.report import HeatmapExample, Report
    from tokenalign.rollout.batch import token_logprobs
    from tokenalign.rollout.generate import SamplingConfig, generate
    from tokenalign.scorers import summarize_scores
    from tokenalign.scorers.blame import blame_heatmap_example
    from tokenalign.tasks import get_task
    from tokenalign.utils.io import atomic_write_text
    from tokenalign.utils.models import load_causal_lm

    run_cfg = cfg.effective()
    out = Path(run_cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    save_config(cfg, out / "config.yaml")
    t0 = time.perf_counter()
    task = get_task(run_cfg.task)
    model_path = run_cfg.model or task.model_path()
    model, tokenizer = load_causal_lm(model_path)
    n_params = sum(p.numel() for p in model.parameters())
    log.info("model: %s (%.1fM parameters)", model_path, n_params / 1e6)
    scorer_name = getattr(task.scorer, "label", None) or getattr(task.scorer, "name", type(task.scorer).__name__)
    editor_name = run_cfg.editor or task.editor

    k = run_cfg.samples_per_prompt
    prompts = render_prompts(task.prompts(run_cfg.prompt_split, run_cfg.n_prompts), tokenizer, model_path)
    settings = PolicyEvalSettings(samples_per_prompt=k, seed=run_cfg.seed, kl_samples=False, sampling=run_cfg.sampling)

    def base_logprobs(batch):
        return token_logprobs(model, batch)["logprobs"]

    def evaluate_on_demo_prompts(policy) -> PolicyEvaluation:
        """The base model's samples (step 1) and, after alignment, the aligned policy's:
        the same prompts, settings and seeds, so before and after compare like with like;
        perplexity of the responses under the base model."""
        with torch.no_grad():
            return evaluate_policy_with_samples(policy, tokenizer, prompts, task.scorer, settings, task.stop, task.text_fn,
                                                ref_logprobs_fn=base_logprobs)

    # a chat model answers prompts: it has no unconditional samples
    n_unconditional = 0 if task.chat else run_cfg.n_unconditional
    log.info("sampling %d completions (%d prompts x %d, %d unconditional)", len(prompts) * k + n_unconditional,
             len(prompts), k, n_unconditional)
    before = evaluate_on_demo_prompts(model)
    # Unconditional samples are whole modules: no function-end stop strings.
    t_sample = time.perf_counter()
    unconditional_samples = generate(model, tokenizer, [""] * n_unconditional,
                                     SamplingConfig.of(run_cfg.sampling, stop=[], seed=run_cfg.seed)) if n_unconditional else []
    sample_seconds = before.sample_seconds + time.perf_counter() - t_sample
    unconditional_samples = [dataclasses.replace(s, completion=task.text_fn(s.completion, s.finished))
                             for s in unconditional_samples]
    t_score = time.perf_counter()
    unconditional = task.scorer.score([s.completion for s in unconditional_samples], [s.prompt for s in unconditional_samples])
    score_seconds = before.score_seconds + time.perf_counter() - t_score
    prompted = before.results
    samples = before.scored_samples() + unconditional_samples
    results = prompted + unconditional
    n_tokens = sum(len(s.completion_ids) for s in samples)

    # Rank the K samples of each prompt: a `ranked` dataset for token-reward learning.
    ranked_rows = []
    for i, prompt in enumerate(prompts):
        group = [(samples[i * k + j], prompted[i * k + j]) for j in range(k)]
        group = [(s, r) for s, r in group if s.completion.strip()]
        if len(group) >= 2:
            ranked_rows.append({"prompt": prompt, "responses": [s.completion for s, _ in group],
                                "scores": [-r.misalignment for _, r in group]})
    # Minimal edits: an `edits` dataset for edit-supervised token rewards.
    editor = make_editor(editor_name)
    edits = editor.edit([s.completion for s in samples], [s.prompt for s in samples])
    edit_rows = [{"prompt": s.prompt, "original": e.original, "edited": e.edited}
                 for s, e in zip(samples, edits) if e.changed and not e.failed and e.edited.strip()]
    minimality = edit_minimality([(r["original"], r["edited"]) for r in edit_rows], tokenizer) if edit_rows else float("nan")

    def jsonl(rows: list[dict]) -> str:
        return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)

    atomic_write_text(out / "samples.jsonl", jsonl([
        {"prompt": s.prompt, "completion": s.completion, "finished": s.finished, "misalignment": r.misalignment,
         "violations": r.n_violations, "failed": r.failed, "failure": r.failure,
         "codes": [b.code for b in r.blame]} for s, r in zip(samples, results)
    ]))
    atomic_write_text(out / "ranked.jsonl", jsonl(ranked_rows))
    atomic_write_text(out / "edits.jsonl", jsonl(edit_rows))

    codes = Counter(b.code for r in results for b in r.blame)
    stats = {"prompted": {**summarize_scores(prompted, task.scorer), **before.summary}}
    if unconditional:
        stats["unconditional"] = summarize_scores(unconditional, task.scorer)
    summary = {
        "task": task.name,
        "model": run_cfg.model or ("tokenalign/tasks/pep8/assets/model" if task.name == "pep8" else model_path),
        "parameters": n_params,
        "samples": len(samples),
        "generated_tokens": n_tokens,
        "generated_tokens_per_s": n_tokens / max(sample_seconds, 1e-9),
        "scored_samples_per_minute": 60 * len(samples) / max(score_seconds, 1e-9),
        "mean_length_chars": sum(len(s.completion) for s in samples) / max(len(samples), 1),
        "finished_rate": sum(s.finished for s in samples) / max(len(samples), 1),
        "ranked_lists": len(ranked_rows),
        "edits": len(edit_rows),
        "edit_unchanged_token_share": minimality,
        "top_violations": dict(codes.most_common(8)),
        **{f"{part}_{key}": value for part, st in stats.items() for key, value in st.items()},
        "seconds": time.perf_counter() - t0,
    }
    atomic_write_json(out / "summary.json", summary)

    # report.html
    report = Report(f"tokenalign demo: the {task.name} task")
    report.add_text(
        f"{task.description}. {len(samples)} samples from {summary['model']} ({n_params / 1e6:.1f}M parameters) on "
        f"{len(prompts)} held-out prompts x {k}" + (f" plus {n_unconditional} unconditional" if n_unconditional else "")
        + f"; scored with {scorer_name}. Failures (syntax errors, empty answers, checker crashes) score 1.0 and are counted."
    )
    report.add_table([{"measure": key, **{part: st.get(key) for part, st in stats.items()}} for key in stats["prompted"]],
                     title="Misalignment and the capability guard")
    report.add_table([{"code": c, "count": n} for c, n in codes.most_common(15)], title="Most frequent violations")
    order = sorted(range(len(prompted)), key=lambda i: prompted[i].misalignment)
    valid = [i for i in order if not prompted[i].failed and samples[i].completion.strip()]
    worst = [i for i in reversed(valid) if prompted[i].n_violations > 0][: run_cfg.n_heatmaps]
    best = valid[: max(1, run_cfg.n_heatmaps // 2)]
    report.add_heading(f"Gold blame: which tokens {scorer_name} blames")
    report.add_text(f"Red tokens overlap what {scorer_name} charges (hover for the codes). The grey text is the prompt.", muted=True)
    report.add_heatmaps([blame_heatmap_example(tokenizer, samples[i], prompted[i], f"sample {i} (highest misalignment first)") for i in worst],
                        scale="sequential", vmin=0.0, vmax=1.0, label="blamed")
    report.add_heatmaps([blame_heatmap_example(tokenizer, samples[i], prompted[i], f"sample {i} (cleanest)") for i in best],
                        title="Cleanest samples", scale="sequential", vmin=0.0, vmax=1.0, label="blamed")
    if edit_rows:
        report.add_heading(f"Edit-diff labels: what the {editor_name} edit changed")
        examples = []
        for row in edit_rows[: run_cfg.n_heatmaps // 2 or 1]:
            bad, good = edit_labels(row["original"], row["edited"], tokenizer)
            examples.append(HeatmapExample(bad.text, bad.offsets, [1.0 if x == 0.0 else 0.0 for x in bad.labels], title="original (bad tokens)"))
            examples.append(HeatmapExample(good.text, good.offsets, [1.0 if x == 1.0 else 0.0 for x in good.labels], title="edited (good tokens)"))
        report.add_heatmaps(examples, scale="sequential", vmin=0.0, vmax=1.0, label="changed")
    if run_cfg.align.enabled:
        from tokenalign.jobs.demo_align import run_demo_alignment

        summary.update(run_demo_alignment(run_cfg, out, before, evaluate_on_demo_prompts, tokenizer, report, task))
        summary["seconds"] = time.perf_counter() - t0
        atomic_write_json(out / "summary.json", summary)
    report.write(out / "report.html")

    console = Console()
    table = Table(title=f"tokenalign demo — {task.name} task (base model)")
    table.add_column("measure")
    for part in stats:
        table.add_column(part, justify="right")
    for key, label in (("n", "samples"), *SHOWN):
        if key in stats["prompted"]:
            vals = [stats[p].get(key, float("nan")) for p in stats]
            table.add_row(label, *(f"{v:.4f}" if isinstance(v, float) else str(v) for v in vals))
    console.print(table)
    steps = Table(title="pipeline")
    steps.add_column("step")
    steps.add_column("result")
    steps.add_row("sample (KV cache)", f"{len(samples)} samples, {summary['generated_tokens_per_s']:.0f} generated tokens/s")
    steps.add_row(f"score ({scorer_name})", f"{summary['scored_samples_per_minute']:.0f} samples/minute")
    steps.add_row("rank", f"{len(ranked_rows)} lists -> {out / 'ranked.jsonl'}")
    steps.add_row(f"edit ({editor_name})", f"{len(edit_rows)} edits, {minimality:.1%} of tokens unchanged -> {out / 'edits.jsonl'}")
    steps.add_row("learn token reward", f"tokenalign reward --set data.train={out / 'ranked.jsonl'} --set data.format=ranked")
    if "align_after" in summary:
        b, a = summary["align_before"], summary["align_after"]
        steps.add_row(f"align ({run_cfg.align.method})", f"{summary['align_iterations']} iterations -> {out / 'align'}")
        console.print(steps)
        after = Table(title=f"held-out prompts: base model vs after {run_cfg.align.method} (same prompts, settings, seeds)")
        after.add_column("measure")
        after.add_column("before", justify="right")
        after.add_column("after", justify="right")
        for key, label in SHOWN:
            if key in b and key in a:
                after.add_row(label, f"{b[key]:.4f}", f"{a[key]:.4f}")
        if "align_judge_win_rate" in summary:
            after.add_row("judge: after preferred to before", "0.5", f"{summary['align_judge_win_rate']:.3f}")
        kl = summary.get("align_kl_to_ref")
        after.add_row("KL to the base model (per sample)", "0", f"{kl:.3f}" if kl is not None else "-")
        console.print(after)
        for flag in summary.get("align_guard_flags", []):
            console.print(f"[bold red]capability guard:[/] {flag}")
    else:
        steps.add_row("align the policy", "skipped (align.enabled=false)")
        console.print(steps)
    console.print(f"report: {out / 'report.html'}")
    return summary
