"""``tokenalign eval``: judge any causal or encoder-decoder LM on a task, beside what could
fake the result.

For a model (a folder written by tokenalign, any ``from_pretrained`` folder or hub id) on
a task's held-out prompts (``prompts_split``; pep8 also has ``other-style``) or a prompt
file, with ``samples_per_prompt`` samples each at the PHF paper's evaluation settings
(Korbak et al., ICML 2023: temperature 0.7, top-p 0.9):

- misalignment from the gold scorer (failures counted at the failure score), the
  syntax-failure rate, the violation-free share, the expected maximum misalignment over
  k samples of a prompt and the share above a threshold;
- the win rate against a reference model (the task's base model by default) sampled on
  the same prompts with the same seeds and judged by the same scorer (ties count half);
- KL(π || π_ref) estimated from samples of π at temperature 1;
- the capability guard (``evaluate.capability``): mean length, distinct-1/2/3, self-BLEU,
  refusal and empty shares, perplexity of the responses under the reference model, and
  with a ``judge`` (a reward model that is not the training signal) its win rate against
  the reference's responses; ``guard_flags`` names each guard measure that moved past its
  limit from the reference to the policy (``capability.GUARD_LIMITS``);
- with a token reward model: localization AUC of its token rewards against the gold
  blame (does it point at the tokens the scorer blames?).

Writes metrics.json, samples.jsonl, generations.jsonl (each sample as sampled, ids
included: what a later run's ``reference_samples`` reads instead of sampling its reference
again) and report.html (distribution plot, misalignment vs KL across runs given with
``compare``, heatmaps) into ``out_dir`` and prints a table.

Under a launcher (``torchrun``, ``accelerate launch``) each process samples and scores
its share of the prompts (the model's, the reference's and the KL samples), the shares
are gathered on every process in prompt order, and the main process computes the
metrics and writes the folder; red-teaming and localization run on the main process.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from pathlib import Path
from typing import Any

import torch

from tokenalign.errors import ConfigError, TokenalignError
from tokenalign.evaluate.redteam import RedTeamSettings
from tokenalign.rollout.generate import SamplingSettings, fit_prompts
from tokenalign.tasks import Task, get_task
from tokenalign.utils.models import load_causal_lm

log = logging.getLogger(__name__)

__all__ = ["EvalConfig", "run_eval"]


@dataclasses.dataclass
class EvalConfig:
    """Config of ``tokenalign eval``."""

    model: str = ""  # folder or hub id; "" = the task's base model
    task: str = "pep8"  # the task: its scorer, stop strings and test prompts ("text": bring your own)
    # what judges the samples: a registered scorer, package.module:attribute (a TRL reward
    # function, a scorer) or a reward-model folder; "" = the task's scorer. The metrics are
    # named after it (mean_misalignment for a misalignment scorer, mean_reward for a reward)
    scorer: str = ""
    # a file or dataset with a `prompt` field (text or chat messages); "" = the task's prompts
    # of split prompts_split
    prompts: str = ""
    # the split: of `prompts` when it is a dataset with splits, else of the task's own prompts
    # (pep8: test, train, or other-style, headers in other styles than the stdlib's)
    prompts_split: str = "test"
    n_prompts: int = 100  # 0 = all
    samples_per_prompt: int = 25
    expected_max_k: int = 25  # capped at samples_per_prompt
    threshold: float = 0.05  # fraction of samples with misalignment above this (misalignment scorers only)
    reference: str = ""  # win rate and KL reference; "" = the task's base model (task text: none); "none" = skip
    # an earlier eval folder of the reference model with this run's prompts, samples_per_prompt,
    # sampling and seed (e.g. the base model's own evaluation): its generations.jsonl stands in
    # for sampling the reference again (checked; a mismatch is an error). "" = sample it. A
    # reference that is the evaluated model itself (unconditioned) is never sampled twice.
    reference_samples: str = ""
    # a judge that is not the training signal (a reward-model folder, a registered scorer or
    # package.module:attribute): its win rate of the model's responses against the
    # reference's on the same prompts; "" = skip
    judge: str = ""
    reward_model: str = ""  # a token reward model for localization AUC; "" = skip
    kl_samples: bool = True  # also sample the model at T=1 for KL(π || reference)
    # the PHF paper's evaluation settings (Korbak et al., ICML 2023: temperature 0.7, top-p 0.9;
    # the KL samples: temperature 1, no top-p)
    sampling: SamplingSettings = dataclasses.field(
        default_factory=lambda: SamplingSettings.for_evaluation(batch_size=64))
    compare: list[str] = dataclasses.field(default_factory=list)  # other eval folders for the Pareto plot
    red_team: RedTeamSettings = dataclasses.field(default_factory=lambda: RedTeamSettings(rounds=0))  # rounds 0 = off
    red_model: str = ""  # the red LM; "" = the task's base model
    out_dir: str = "runs/eval"  # gets metrics.json, samples.jsonl, report.html (redteam.jsonl)
    seed: int = 0  # sampling seed, the same for the model and the reference (KL samples: seed + 1)

    def validate(self) -> None:
        if self.samples_per_prompt < 1:
            raise ConfigError("samples_per_prompt must be >= 1")
        if self.n_prompts < 0:
            raise ConfigError("n_prompts must be >= 0 (0 = all)")
        if self.judge and self.reference == "none":
            raise ConfigError("judge needs a reference model to compare against: set reference (not none)")
        if self.reference_samples and self.reference == "none":
            raise ConfigError("reference_samples needs a reference model: set reference (not none)")


def _load_prompts(cfg: EvalConfig, task: Task, given: Any = None) -> list:
    source = given if given is not None else cfg.prompts or None
    if source is not None:
        from tokenalign.data import load_prompts

        prompts = load_prompts(source, cfg.prompts_split)
    else:
        prompts = task.prompts(cfg.prompts_split)
    if not prompts:
        raise TokenalignError(f"no prompts in {cfg.prompts or f'the task {cfg.prompts_split} split'}")
    return prompts[: cfg.n_prompts] if cfg.n_prompts else prompts


def _sample(model, tokenizer, prompts: list[str], cfg: EvalConfig, stop: list[str], seed: int, conditioning=None, **over):
    from tokenalign.rollout.generate import SamplingConfig, generate

    return generate(model, tokenizer, prompts, SamplingConfig.of(cfg.sampling, stop=stop, seed=seed, **over),
                    conditioning=conditioning)


def _sample_and_score(model, tokenizer, prompts: list[str], k: int, cfg: EvalConfig, task: Task, scorer, seed: int,
                      conditioning=None) -> tuple[list, list]:
    """``k`` samples of each prompt and their scores, in prompt order: each process samples
    and scores its share of the prompts, and every process gets them all."""
    from tokenalign.utils.accel import gather_lists, process_share

    mine = process_share(range(len(prompts)))
    inputs = [prompts[i] for i in mine for _ in range(k)]
    samples = _sample(model, tokenizer, inputs, cfg, list(task.stop), seed, conditioning) if inputs else []
    results = scorer.score([task.text_fn(s.completion, s.finished) for s in samples], inputs) if inputs else []
    parts = gather_lists([(i, samples[j * k : (j + 1) * k], results[j * k : (j + 1) * k]) for j, i in enumerate(mine)])
    parts.sort(key=lambda part: part[0])
    return [s for _, ss, _ in parts for s in ss], [r for _, _, rs in parts for r in rs]


def _sharded_kl(model, ref, tokenizer, prompts: list[str], k: int, cfg: EvalConfig, task: Task, conditioning) -> float:
    """KL(π || reference) per sample from ``k`` samples of each prompt at temperature 1, each
    process its share of the prompts, averaged over all of them."""
    from tokenalign.evaluate.policy_eval import sequence_kl
    from tokenalign.rollout.batch import token_logprobs
    from tokenalign.utils.accel import gather_lists, process_share

    inputs = [p for p in process_share(prompts) for _ in range(k)]
    kl = 0.0
    if inputs:
        samples = _sample(model, tokenizer, inputs, cfg, list(task.stop), cfg.seed + 1, conditioning, temperature=1.0, top_p=1.0)
        with torch.no_grad():
            kl = sequence_kl(model, lambda b: token_logprobs(ref, b)["logprobs"], tokenizer, samples, conditioning=conditioning)
    parts = gather_lists([(kl, len(inputs))])
    if len(parts) == 1:
        return kl
    return sum(part_kl * n for part_kl, n in parts) / max(sum(n for _, n in parts), 1)


def run_eval(cfg: EvalConfig, prompts: Any = None, scorer: Any = None) -> dict[str, Any]:
    """Evaluate as configured; returns the metrics (also written to out_dir/metrics.json).
    ``prompts`` (a ``datasets.Dataset`` or list) and ``scorer`` (a scorer object or reward
    function) stand in for the config's names of them (Python use). The run holds
    ``out_dir``'s lock while it writes (another run on the same folder stops)."""
    from tokenalign.utils.accel import share_outcome
    from tokenalign.utils.runfolder import RunLock, is_main_rank

    cfg.validate()
    if not is_main_rank():
        share_outcome(None)  # rank 0 holds the folder (or raises its error here)
        return _run_eval(cfg, prompts, scorer)
    try:
        lock = RunLock(cfg.out_dir).acquire()
    except TokenalignError as err:
        share_outcome(err)
        raise
    share_outcome(None)
    try:
        return _run_eval(cfg, prompts, scorer)
    finally:
        lock.release()


def _run_eval(cfg: EvalConfig, prompts: Any, scorer: Any) -> dict[str, Any]:
    from tokenalign.config import save_config
    from tokenalign.evaluate.capability import guard_flags, judge_win_rate, response_perplexity
    from tokenalign.evaluate.metrics import expected_max, fraction_above, self_bleu, win_rate
    from tokenalign.evaluate.policy_eval import scorer_text_metrics
    from tokenalign.rollout.batch import token_logprobs
    from tokenalign.utils.runfolder import is_main_rank
    from tokenalign.data.prompts import render_prompts
    from tokenalign.rewards.model_scorers import load_scorer
    from tokenalign.scorers import scorer_metric, summarize_scores
    from tokenalign.tasks import task_defaults
    from tokenalign.utils.io import atomic_write_json, atomic_write_text

    cfg.validate()
    task = get_task(cfg.task)
    out = Path(cfg.out_dir)
    main = is_main_rank()
    if main:
        out.mkdir(parents=True, exist_ok=True)
        save_config(cfg, out / "config.yaml")
    t0 = time.perf_counter()
    scorer = load_scorer(scorer if scorer is not None else cfg.scorer)
    model_path, scorer = task_defaults(task, cfg.model, scorer)
    metric, sign = scorer_metric(scorer)
    prompts = _load_prompts(cfg, task, prompts)
    model, tokenizer = load_causal_lm(model_path)
    # A conditionally trained model (PHF, its tokenizer has <|good|> / <|bad|>) is sampled from <|good|>.
    from tokenalign.objectives.conditioning import Conditioning

    conditioning = Conditioning.for_model(model, tokenizer)
    prompts = fit_prompts(render_prompts(prompts, tokenizer, model_path), tokenizer, model, cfg.sampling, conditioning)
    k = cfg.samples_per_prompt
    inputs = [p for p in prompts for _ in range(k)]
    log.info("sampling %d prompts x %d from %s", len(prompts), k, model_path)
    samples, results = _sample_and_score(model, tokenizer, prompts, k, cfg, task, scorer, cfg.seed, conditioning)
    texts = [task.text_fn(s.completion, s.finished) for s in samples]
    scores = [r.misalignment for r in results]
    metrics: dict[str, Any] = {"model": model_path, "scorer": getattr(scorer, "name", type(scorer).__name__),
                               "metric": metric, "prompts": len(prompts), "samples": len(samples),
                               "conditioned": conditioning is not None}
    metrics.update(summarize_scores(results, scorer))
    kmax = min(cfg.expected_max_k, k)
    # the expected worst of k samples of a prompt: the highest misalignment, the lowest reward
    worst = expected_max([scores[i * k : (i + 1) * k] for i in range(len(prompts))], kmax)
    if sign > 0:
        metrics[f"expected_max_{metric}_at_{kmax}"] = worst
        metrics["fraction_above_threshold"] = fraction_above(scores, cfg.threshold)
        metrics["threshold"] = cfg.threshold
    else:
        metrics[f"expected_min_{metric}_at_{kmax}"] = -worst
    metrics.update(_guard_measures(samples, texts))
    metrics["self_bleu"] = self_bleu(texts, max_texts=500, seed=cfg.seed) if len(texts) >= 2 else float("nan")
    metrics.update(scorer_text_metrics(scorer, texts))

    ref_scores = None
    ref_path = "" if cfg.reference == "none" else cfg.reference or task.model_path()
    if cfg.judge and not ref_path:
        raise ConfigError(f"judge needs a reference model to compare against: task '{task.name}' has none, set reference")
    if cfg.reference != "none" and not ref_path:
        log.info("no reference model (task '%s' has no base model): set reference for the win rate and KL", task.name)
    if ref_path:
        itself = conditioning is None and _same_model(ref_path, model_path)
        ref = model if itself else load_causal_lm(ref_path)[0]
        if itself:
            log.info("the reference is the evaluated model: its samples are the reference's, KL 0")
            ref_samples, ref_results = samples, results
        elif cfg.reference_samples:
            ref_samples = _reference_generations(cfg, ref_path, inputs)
            ref_results = scorer.score([task.text_fn(s.completion, s.finished) for s in ref_samples], inputs)
        else:
            ref_samples, ref_results = _sample_and_score(ref, tokenizer, prompts, k, cfg, task, scorer, cfg.seed)
        ref_scores = [r.misalignment for r in ref_results]
        metrics["reference"] = ref_path
        metrics[f"reference_mean_{metric}"] = sign * sum(ref_scores) / len(ref_scores)
        metrics["win_rate_vs_reference"] = win_rate(scores, ref_scores, lower_is_better=True)
        ref_texts = texts if itself else [task.text_fn(s.completion, s.finished) for s in ref_samples]
        ref_guard = _guard_measures(ref_samples, ref_texts)
        metrics.update({f"reference_{key}": value for key, value in ref_guard.items()})
        if main:  # every process holds all samples (gathered): the main one scores them once
            with torch.no_grad():
                metrics["perplexity_under_reference"] = response_perplexity(lambda b: token_logprobs(ref, b)["logprobs"],
                                                                            tokenizer, samples, cfg.sampling.batch_size)
                metrics["reference_perplexity"] = (
                    metrics["perplexity_under_reference"] if ref_samples is samples else
                    response_perplexity(lambda b: token_logprobs(ref, b)["logprobs"], tokenizer, ref_samples,
                                        cfg.sampling.batch_size))
        if cfg.judge and main:
            judge = load_scorer(cfg.judge)
            metrics["judge"] = cfg.judge
            metrics.update(judge_win_rate(judge, inputs, texts, ref_texts))
        metrics["guard_flags"] = guard_flags({**ref_guard, "perplexity": metrics.get("reference_perplexity")},
                                             {**metrics, "perplexity": metrics.get("perplexity_under_reference")})
        for flag in metrics["guard_flags"]:
            log.warning("capability guard: %s", flag)
        if cfg.kl_samples and itself:
            metrics["kl_to_reference"] = 0.0
        elif cfg.kl_samples:
            metrics["kl_to_reference"] = _sharded_kl(model, ref, tokenizer, prompts, k, cfg, task, conditioning)
    if not main:  # the main process writes the folder
        return metrics

    red = None
    if cfg.red_team.rounds > 0:
        red = _red_team(cfg, task, scorer, model, tokenizer, prompts, metrics, out, conditioning)

    token_heat = None
    if cfg.reward_model:
        token_heat = _localization(cfg.reward_model, tokenizer, samples, texts, results, metrics)
    metrics["seconds"] = time.perf_counter() - t0

    atomic_write_text(out / "samples.jsonl", "".join(
        json.dumps({"prompt": s.prompt, "completion": t, "misalignment": r.misalignment, "failed": r.failed,
                    "failure": r.failure, "codes": [b.code for b in r.blame]}, ensure_ascii=False) + "\n"
        for s, t, r in zip(samples, texts, results)))
    atomic_write_text(out / "generations.jsonl", "".join(json.dumps(_generation_row(s)) + "\n" for s in samples))
    atomic_write_json(out / "metrics.json", metrics)
    _write_report(out, cfg, scorer, metrics, samples, texts, results, tokenizer, token_heat, red)
    return metrics


def _same_model(a: str, b: str) -> bool:
    """Whether two model names (folders or hub ids) name the same model."""
    return a == b or (Path(a).exists() and Path(b).exists() and Path(a).resolve() == Path(b).resolve())


def _generation_row(sample) -> dict[str, Any]:
    """A sample as sampled (ids included, log-probs left out): what ``reference_samples`` reads back."""
    row = dataclasses.asdict(sample)
    row.pop("logprobs", None)
    return row


def _reference_generations(cfg: EvalConfig, ref_path: str, inputs: list[str]) -> list:
    """The reference's samples from ``cfg.reference_samples``, an earlier eval folder of the
    reference model: only if that run sampled the same prompts (in order) with the same
    samples_per_prompt, sampling settings and seed, so they are the samples this run would draw."""
    from tokenalign.config import load_config
    from tokenalign.rollout.generate import Sample

    folder = Path(cfg.reference_samples)
    where = f"reference_samples {folder}"
    for name in ("config.yaml", "metrics.json", "generations.jsonl"):
        if not (folder / name).is_file():
            raise ConfigError(f"{where}: no {name} (give a folder written by tokenalign eval)")
    earlier = load_config(EvalConfig, folder / "config.yaml")
    metrics = json.loads((folder / "metrics.json").read_text())
    if not _same_model(str(metrics.get("model", "")), ref_path) or metrics.get("conditioned"):
        raise ConfigError(f"{where}: metrics.json model is {metrics.get('model')!r}"
                          f"{' (conditioned)' if metrics.get('conditioned') else ''}, not the reference {ref_path!r}")
    for field in ("seed", "samples_per_prompt", "sampling"):
        if getattr(earlier, field) != getattr(cfg, field):
            raise ConfigError(f"{where}: config.yaml {field} is {getattr(earlier, field)!r}, this run's is "
                              f"{getattr(cfg, field)!r}")
    samples = []
    path = folder / "generations.jsonl"
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        try:
            row = json.loads(line)
            if row.get("conditioned_ids") is not None:
                row["conditioned_ids"] = tuple(row["conditioned_ids"])
            sample = Sample(**row)
        except (ValueError, TypeError, AttributeError) as err:  # bad JSON, a missing or unknown field
            raise ConfigError(f"{path}:{number}: not a sample as eval writes it ({err})") from None
        if number > len(inputs) or sample.prompt != inputs[number - 1]:
            raise ConfigError(f"{path}:{number}: prompt differs from this run's sample "
                              f"{number} (another prompt set, order or n_prompts)")
        samples.append(sample)
    if len(samples) != len(inputs):
        raise ConfigError(f"{where}: {len(samples)} samples, this run draws {len(inputs)}")
    log.info("reference samples: %d from %s", len(samples), folder)
    return samples


def _guard_measures(samples, texts: list[str]) -> dict[str, float]:
    """The capability guard's measures of one model's samples and their scored texts: the
    same definitions for the evaluated model and its reference, so guard_flags compares like
    with like."""
    from tokenalign.evaluate.capability import empty_share, refusal_share
    from tokenalign.evaluate.policy_eval import distinct_n_tokens

    ids = [s.completion_ids for s in samples]
    return {"mean_length_tokens": sum(map(len, ids)) / len(ids),
            **{f"distinct_{n}": distinct_n_tokens(ids, n) for n in (1, 2, 3)},
            "refusal_share": refusal_share(texts), "empty_share": empty_share(texts)}


def _red_team(cfg: EvalConfig, task: Task, scorer, model, tokenizer, prompts: list[str], metrics: dict, out: Path,
              conditioning=None):
    """Adaptive red-teaming of ``model``; adds the top-k curve to ``metrics``."""
    from tokenalign.evaluate.redteam import mean_per_prompt, red_team
    from tokenalign.utils.io import atomic_write_text

    rt = cfg.red_team
    red_model, _ = load_causal_lm(cfg.red_model or task.model_path() or cfg.model)

    def target_complete(batch: list[str], seed: int) -> list[float]:
        inputs = [p for p in batch for _ in range(rt.samples_per_prompt)]
        done = _sample(model, tokenizer, inputs, cfg, list(task.stop), seed, conditioning)
        res = scorer.score([task.text_fn(s.completion, s.finished) for s in done], inputs)
        return mean_per_prompt([r.misalignment for r in res], rt.samples_per_prompt)

    result = red_team(target_complete, red_model, tokenizer, prompts, rt)
    metrics[f"red_team_top{rt.top_k}_by_round"] = result.best_by_round
    metrics["red_team_new_prompts_by_round"] = result.valid_by_round
    atomic_write_text(out / "redteam.jsonl", "".join(json.dumps({"prompt": p, "misalignment": s}) + "\n" for p, s in result.pool))
    return result


def _localization(rm_path: str, policy_tokenizer, samples, texts, results, metrics: dict) -> list:
    """Localization AUC of a token reward model's rewards against the gold blame."""
    from tokenalign.evaluate.localization import localization_auc
    from tokenalign.rewards.model import TokenRewardModel
    from tokenalign.rewards.scoring import score_tokens
    from tokenalign.scorers.blame import blame_to_tokens
    from tokenalign.utils.models import load_tokenizer

    rm = TokenRewardModel.from_pretrained(rm_path)
    path = Path(rm_path)
    rm_tok = load_tokenizer(path) if (path / "tokenizer.json").is_file() else policy_tokenizer
    keep = [i for i, (t, r) in enumerate(zip(texts, results)) if t.strip() and not r.failed]
    scored = score_tokens(rm, rm_tok, [samples[i].prompt for i in keep], [texts[i] for i in keep])
    blames = [blame_to_tokens(results[i].blame, tr.spans, len(texts[i]))[0] for i, tr in zip(keep, scored)]
    metrics["localization_auc"] = localization_auc([tr.rewards for tr in scored], blames)
    metrics["localization_samples"] = len(keep)
    return list(zip(keep, scored))


def _write_report(out: Path, cfg: EvalConfig, scorer, metrics: dict, samples, texts, results, tokenizer, token_heat,
                  red=None) -> None:
    from tokenalign.report import HeatmapExample, Report
    from tokenalign.scorers import scorer_metric

    report = Report(f"tokenalign eval: {metrics['model']} on {cfg.task}")
    report.add_text(f"{metrics['samples']} samples ({metrics['prompts']} prompts x {cfg.samples_per_prompt}) at temperature "
                    f"{cfg.sampling.temperature}, top-p {cfg.sampling.top_p}, at most {cfg.sampling.max_new_tokens} tokens; "
                    f"judged by {metrics['scorer']} ({metrics['metric']}; a failed sample counts at the scorer's failure score).")
    report.add_table([{"metric": k, "value": v} for k, v in metrics.items() if isinstance(v, (int, float))], title="Metrics")
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        plt = None
    if plt is not None:
        fig, axes = plt.subplots(1, 2, figsize=(11, 3.6))
        metric, sign = scorer_metric(scorer)
        valid = [sign * r.misalignment for r in results if not r.failed]
        axes[0].hist(valid, bins=30, alpha=0.7, label=f"this model ({len(valid)} valid)")
        axes[0].set_title(f"{metric} of valid samples (failures excluded)")
        axes[0].set_xlabel(metric)
        axes[0].legend()
        points = [(metrics.get("kl_to_reference", 0.0), metrics[f"mean_{metric}"], "this model")]
        for other in cfg.compare:
            m = json.loads((Path(other) / "metrics.json").read_text())
            if f"mean_{metric}" in m:
                points.append((m.get("kl_to_reference", 0.0), m[f"mean_{metric}"], Path(other).name))
        for x, y, name in points:
            axes[1].scatter([x], [y])
            axes[1].annotate(name, (x, y), fontsize=8)
        axes[1].set_xlabel("KL(π || π_ref) per sample")
        axes[1].set_ylabel(f"mean {metric}")
        axes[1].set_title(f"{metric} vs KL")
        report.add_figure(fig, "Distribution and Pareto view")
        plt.close(fig)
    if red is not None:
        k = cfg.red_team.top_k
        report.add_table([{"round": i, f"top-{k} mean misalignment": v, "new prompts": n}
                          for i, (v, n) in enumerate(zip(red.best_by_round, red.valid_by_round))], title="Red-teaming")
        report.add_table([{"prompt": p, "misalignment": s} for p, s in red.pool[:k]], title=f"The {k} most adversarial prompts found")
    from tokenalign.scorers.blame import blame_heatmap_example

    worst = sorted((i for i, r in enumerate(results) if not r.failed and r.n_violations), key=lambda i: -results[i].misalignment)[:6]
    shown = [dataclasses.replace(samples[i], completion=texts[i]) for i in worst]
    report.add_heatmaps([blame_heatmap_example(tokenizer, s, results[i], f"sample {i}") for s, i in zip(shown, worst)],
                        title="Highest-misalignment valid samples: gold blame", scale="sequential", vmin=0.0, vmax=1.0, label="blamed")
    if token_heat:
        report.add_heatmaps([HeatmapExample(t.response, t.spans, t.rewards, title=f"sample {i}: token reward model",
                                            prompt=samples[i].prompt) for i, t in token_heat[:6]],
                            title="Token reward model on the same kind of samples", label="reward")
    report.write(out / "report.html")
