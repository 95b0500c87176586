"""``tokenalign align``: the alternating guidance <-> policy loop of preference-grounded
token guidance (Yang et al., NeurIPS 2023).

1. sample K responses per prompt from the current policy and score them with the
   sequence-level preference source (``policy.scorer``; default the task's scorer), and
   add the human rankings of ``guidance.data`` when given;
2. re-learn the token guidance r_φ on those ranked lists (Plackett-Luce over the
   aggregated token rewards), warm-started from the previous r_φ with a fresh optimizer;
3. train the policy with r_φ frozen (default: the guidance paper's token REINFORCE with
   max-entropy) for ``relearn_every`` iterations;
4. repeat; re-learning stops after ``relearn_until`` iterations (the reference schedule
   re-learns during the first half of training only).

The run folder holds the policy trainer's files (metrics.jsonl, checkpoint/, model/,
report.html) plus guidance/round-NNN/ (each r_φ), guidance.jsonl (its fit metrics, and the
previous r_φ's ranking accuracy on the rollouts it scored since its round) and
rollout_lists.jsonl (every rollout's prompts ranked by the preference source, with r_φ's
sequence scores of them: r_φ's held-out ranking accuracy, and its next round's data with
``guidance.reuse_rollouts``). With ``policy.report_to``, each guidance round's row goes to
the policy run's trackers too, under ``guidance/``, at the iteration it was learned at.
A killed run resumes exactly: from the policy checkpoint (iteration C) and the last r_φ
learned before it; rounds learned at or after C (from the policy after the checkpoint)
are removed and learned again, and guidance.jsonl and rollout_lists.jsonl lose their rows
from C on, which are redone. The run holds the folder's lock while it runs and resumes
only with the config it started with (:data:`MAY_CHANGE` may differ).
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any, Literal

from tokenalign.errors import ConfigError
from tokenalign.policy.config import RewardSettings, TrainConfig
from tokenalign.policy.rollout_ranker import RolloutRanker
from tokenalign.rewards.learn import RewardLearnConfig
from tokenalign.rewards.model import TokenRewardHeadConfig
from tokenalign.rewards.ranking import group_ranked_lists, pair_accuracy
from tokenalign.utils.lora import LoraSettings
from tokenalign.utils.metrics import MetricsWriter, format_metrics
from tokenalign.utils.tracking import resolve_report_to

log = logging.getLogger(__name__)

__all__ = ["AlignConfig", "run_align", "MAY_CHANGE"]

# Keys a resumed run may change: how far it goes (extending a run), when it stops, the progress bars.
MAY_CHANGE = ("policy.iterations", "policy.stop_after_iterations", "policy.progress", "guidance.learn.progress")


def _pg_policy_defaults() -> TrainConfig:
    return TrainConfig(objective="reinforce", entropy_coef=0.125, kl_coef=0.0, samples_per_prompt=4,
                       reward=RewardSettings(source="guidance", placement="token"))


@dataclasses.dataclass
class GuidanceSettings:
    """How r_φ is (re-)learned each round."""

    head: TokenRewardHeadConfig = dataclasses.field(default_factory=TokenRewardHeadConfig)
    learn: RewardLearnConfig = dataclasses.field(default_factory=lambda: RewardLearnConfig(epochs=2, lr=1e-4, aggregator="avg"))
    prompts: int = 64  # prompts sampled (K each, K = policy.samples_per_prompt) per re-learning
    # Also learn from the policy's own rollouts since the previous round: each rollout prompt's
    # K samples, ranked by the same preference source (they are K samples of the policy per
    # prompt, as step 1 asks, already drawn; ranking them costs only the scorer)
    reuse_rollouts: bool = False
    # adapters on r_φ's backbone (e.g. its last few blocks): only they and the head learn, and
    # each round's backward pass stops below the lowest adapted block (a pretrained LM on a CPU)
    lora: LoraSettings = dataclasses.field(default_factory=LoraSettings)
    backbone: str = ""  # r_φ's initial backbone; "" = the policy's initialisation
    # human preferences r_φ also learns from in every round: a file or dataset of pairs
    # (prompt, chosen, rejected), ranked lists (prompt, responses, scores) or minimal edits
    # (prompt, original, edited), as `tokenalign reward` reads them. With it, policy.prompts "" trains on the file's prompts, and the
    # scorer may be left out (then set guidance.prompts 0 and policy.eval.every 0: nothing
    # ranks the policy's samples)
    data: str = ""
    # pairs | ranked | edits (an edit is a pair: the edited response preferred to the original)
    data_format: Literal["pairs", "ranked", "edits"] = "pairs"
    field_map: dict[str, str] = dataclasses.field(default_factory=dict)  # our field -> the file's column


@dataclasses.dataclass
class AlignConfig:
    """``tokenalign align``: the policy config (its ``iterations`` are the whole run) plus the
    guidance schedule."""

    out_dir: str = "runs/align"
    policy: TrainConfig = dataclasses.field(default_factory=_pg_policy_defaults)
    guidance: GuidanceSettings = dataclasses.field(default_factory=GuidanceSettings)
    relearn_every: int = 10  # policy iterations between re-learnings
    relearn_until: int = 0  # last iteration that triggers a re-learning; 0 = half of policy.iterations

    def validate(self) -> None:
        self.policy.validate()
        if not self.guidance.data and not self.guidance.prompts and not self.guidance.reuse_rollouts:
            raise ConfigError("r_φ has nothing to learn from: set guidance.prompts > 0, guidance.reuse_rollouts or guidance.data")
        if self.relearn_every < 1:
            raise ConfigError("relearn_every must be >= 1")
        if self.policy.reward.placement == "sequence" and self.policy.objective == "wmle":
            raise ConfigError("wmle needs token rewards")
        if self.guidance.reuse_rollouts and not self.policy.objective_class.reports_kl:
            raise ConfigError(f"guidance.reuse_rollouts: objective {self.policy.objective} trains on a dataset, not on the "
                              "policy's samples (no rollouts to rank); set guidance.reuse_rollouts=false")
        if self.policy.samples_per_prompt < 2:
            raise ConfigError("policy.samples_per_prompt must be >= 2: the guidance learns from rankings of K samples")
        if resolve_report_to(self.guidance.learn.report_to):
            raise ConfigError("guidance.learn.report_to: the guidance rounds log to the policy run's trackers; "
                              "set policy.report_to instead")

    @property
    def last_relearn(self) -> int:
        return self.relearn_until or self.policy.iterations // 2


def _ranked_lists(trainer, prompts: list[str], k: int, scorer, text_fn, seed: int, keep_empty: bool = False):
    """Step 1 of a round: K samples of each prompt from the current policy, ranked by the
    preference source; returns the ranked lists and the samples' mean misalignment. Each
    process samples and ranks its share of the prompts; every process gets all the lists."""
    from tokenalign.utils.accel import gather_lists, process_share

    samples = trainer.sample([p for p in process_share(prompts) for _ in range(k)], seed)
    texts = [text_fn(s.completion, s.finished) for s in samples]
    results = scorer.score(texts, [s.prompt for s in samples])
    lists = [ex for ex, _ in group_ranked_lists([s.prompt for s in samples], texts, [-r.misalignment for r in results], k,
                                                keep_empty)]
    misalignment = gather_lists([r.misalignment for r in results])
    mean = sum(misalignment) / max(len(misalignment), 1)
    return gather_lists(lists), mean


def _human_lists(settings: GuidanceSettings) -> list:
    """The ranked lists of ``guidance.data`` (none when it is not set)."""
    if not settings.data:
        return []
    from tokenalign.data import load_records
    from tokenalign.jobs.reward import training_examples

    loaded = load_records(settings.data, settings.data_format, field_map=settings.field_map or None)
    if settings.data_format == "edits":
        from tokenalign.rewards.learn import RankedExample

        lists = [RankedExample(r.prompt, (r.edited, r.original), (1.0, 0.0)) for r in loaded.records if r.edited != r.original]
    else:
        lists = training_examples(loaded.records, settings.data_format)
    log.info("guidance: %d human ranked lists from %s, learned from in every round", len(lists), settings.data)
    return lists


def _resume_point(out: Path, guidance_dir: Path, remove: bool = True) -> tuple[int, Path | None]:
    """The iteration C the run resumes at (its checkpoint's, 0 without one) and the r_φ in
    use then: the last round learned before C (None: a fresh head). Rounds learned at or
    after C are removed: the resumed run learns them again, from the same policy samples
    and seeds (keeping one would leave the RNG states and r_φ of the run that learned it).
    ``remove=False`` (the other ranks of a multi-process run): only pick, rank 0 removes."""
    import json
    import shutil

    state = out / "checkpoint" / "state.json"
    resume_at = json.loads(state.read_text())["iteration"] if state.is_file() else 0
    rounds = sorted(guidance_dir.glob("round-*")) if guidance_dir.is_dir() else []
    kept = []
    for path in rounds:
        if int(path.name.split("-")[1]) >= resume_at:
            if not remove:
                continue
            log.info("guidance: removing %s (learned after the checkpoint at iteration %d; it is learned again)",
                     path.name, resume_at)
            shutil.rmtree(path)
        else:
            kept.append(path)
    return resume_at, (kept[-1] if kept else None)


def run_align(cfg: AlignConfig, allow_config_change: bool = False) -> dict[str, Any]:
    """Run the alternating loop; returns the policy trainer's summary. ``allow_config_change``:
    resume a run whose saved config differs in keys other than :data:`MAY_CHANGE`."""
    from tokenalign.config import config_to_yaml
    from tokenalign.utils.runfolder import open_run_folder

    cfg.validate()
    with open_run_folder(cfg.out_dir, config_to_yaml(cfg), may_change=MAY_CHANGE, allow_config_change=allow_config_change,
                         subfolders=("guidance",)):
        return _run_align(cfg)


def _run_align(cfg: AlignConfig) -> dict[str, Any]:
    import torch

    from tokenalign.policy.rewards import TokenModelReward
    from tokenalign.jobs.train import build_trainer, finish_run, write_initial_eval
    from tokenalign.rewards.learn import RewardLearner
    from tokenalign.rewards.model import TokenRewardModel
    from tokenalign.rewards.model_scorers import load_scorer
    from tokenalign.tasks import get_task
    from tokenalign.utils.io import atomic_path, atomic_write_json
    from tokenalign.utils.runfolder import is_main_rank

    out = Path(cfg.out_dir)
    pcfg = dataclasses.replace(cfg.policy, out_dir=str(out))
    task = get_task(pcfg.task)
    guidance_dir = out / "guidance"
    _, last_round = _resume_point(out, guidance_dir, remove=is_main_rank())
    if last_round is not None:
        rm = TokenRewardModel.from_pretrained(last_round)
        log.info("guidance: resuming from %s", last_round)
    else:
        torch.manual_seed(pcfg.seed)  # the fresh head's initialisation: the same on every run
        rm = TokenRewardModel.from_backbone(cfg.guidance.backbone or pcfg.model or task.model_path(), cfg.guidance.head)
        if cfg.guidance.lora.enabled:
            rm.add_lora(cfg.guidance.lora)
    scorer = load_scorer(pcfg.scorer) or task.scorer
    human = _human_lists(cfg.guidance)
    if scorer is None and (cfg.guidance.prompts or cfg.guidance.reuse_rollouts):
        raise ConfigError(f"task '{task.name}' has no scorer to rank the policy's samples: set policy.scorer, or learn "
                          "from guidance.data alone (guidance.prompts=0, guidance.reuse_rollouts=false, policy.eval.every=0)")
    k = pcfg.samples_per_prompt
    rollout_path = out / "rollout_lists.jsonl"

    def guidance_source(tokenizer) -> RolloutRanker | TokenModelReward:
        """r_φ's token rewards for the policy; each rollout ranked by the scorer on the side."""
        source = TokenModelReward(rm, tokenizer, tokenizer, pcfg.reward.aggregate, pcfg.reward.scale, task.text_fn,
                                  normalize=pcfg.reward.normalize)
        if scorer is None or not pcfg.objective_class.reports_kl:
            return source  # nothing to rank: no scorer, or the batches are a dataset's (wmle), not K samples a prompt
        return RolloutRanker(source, scorer, task.text_fn, k, rollout_path, lambda: trainer.iteration,
                             cfg.guidance.learn.aggregator, cfg.guidance.learn.beta)

    # the human file's prompts are the policy's when the config names none
    human_prompts = list(dict.fromkeys(ex.prompt for ex in human)) if human and not pcfg.prompts else None
    trainer, resume_from = build_trainer(pcfg, out, reward_source=guidance_source, prompts=human_prompts, scorer=scorer)
    train_prompts = trainer.train_prompts  # the same prompts for the guidance rounds as for the policy
    if resume_from is not None:
        trainer.load_state(resume_from)
    rollout_lists = MetricsWriter(rollout_path, trainer.accelerator.is_main_process)
    rollout_lists.trim(trainer.iteration - 1)  # rollouts after the checkpoint (written before a kill) are redone
    guidance_log = MetricsWriter(out / "guidance.jsonl", trainer.accelerator.is_main_process)
    guidance_log.trim(trainer.iteration - 1)  # the rounds removed by _resume_point are learned again
    write_initial_eval(trainer, resuming=resume_from is not None)

    end = pcfg.iterations
    if pcfg.stop_after_iterations:
        end = min(end, trainer.iteration + pcfg.stop_after_iterations)
    while trainer.iteration < end and trainer.stopped_early is None:
        it = trainer.iteration
        round_dir = guidance_dir / f"round-{it:05d}"
        trainer.accelerator.wait_for_everyone()  # the main process has written the last rollout's lists
        if it % cfg.relearn_every == 0 and it <= cfg.last_relearn and not round_dir.exists():
            start = (it // cfg.relearn_every) * cfg.guidance.prompts
            prompts = [train_prompts[(start + j) % len(train_prompts)] for j in range(cfg.guidance.prompts)]
            lists, mean = (list(human), float("nan"))
            if cfg.guidance.prompts:
                sampled, mean = _ranked_lists(trainer, prompts, k, scorer, task.text_fn, seed=pcfg.seed * 7 + it,
                                              keep_empty=rm.head_config.end_token)
                lists += sampled
            # r_φ in use since the previous round, on the rollouts it scored (never trained on)
            since = [row for row in rollout_lists.rows() if it - cfg.relearn_every <= row["iteration"] < it]
            heldout, pairs = pair_accuracy(since)
            if cfg.guidance.reuse_rollouts:
                from tokenalign.rewards.learn import RankedExample

                lists += [RankedExample(row["prompt"], tuple(row["responses"]), tuple(row["scores"])) for row in since]
            history = []
            if lists:
                # One mixed-precision setting per process (accelerate's state is shared): the policy's.
                learn_cfg = dataclasses.replace(cfg.guidance.learn, seed=cfg.guidance.learn.seed + it,
                                                mixed_precision=pcfg.mixed_precision, report_to="none")
                learner = RewardLearner(rm, trainer.tokenizer, learn_cfg)  # warm start: same model, fresh optimizer
                history = learner.fit(lists)
            else:  # a tiny run can draw only ties: keep r_φ as it is rather than fail the run
                log.warning("guidance round at iteration %d: no ranked list with a preference (all tied or empty); "
                            "r_φ is kept as it is (sample more prompts: guidance.prompts)", it)
            learnable = [p for p in rm.parameters() if p.requires_grad]  # with LoRA: adapters and head
            rm.eval().requires_grad_(False)
            if trainer.accelerator.is_main_process:
                with atomic_path(round_dir) as tmp:
                    rm.save_pretrained(tmp, tokenizer=trainer.tokenizer)
            trainer.accelerator.wait_for_everyone()  # every process sees the round's folder
            for p in learnable:
                p.requires_grad_(True)
            row = {"iteration": it, "lists": len(lists), "sampled_misalignment": mean,
                   "previous_heldout_accuracy": heldout, "previous_heldout_pairs": pairs, **(history[-1] if history else {})}
            guidance_log.append(row)
            if trainer.accelerator.is_main_process:
                trainer.trackers.log(row, step=it, prefix="guidance/")
            log.info("guidance round at iteration %d: %s", it, format_metrics(row))
        rm.eval()
        trainer.fit(until=min(end, (it // cfg.relearn_every + 1) * cfg.relearn_every))
    summary = finish_run(trainer, pcfg, out)
    # r_φ's ranking accuracy on every rollout it scored: samples drawn after it was learned
    accuracy, pairs = pair_accuracy(rollout_lists.rows())
    summary.update(guidance_heldout_accuracy=accuracy, guidance_heldout_pairs=pairs)
    if summary.get("finished") and trainer.accelerator.is_main_process:
        atomic_write_json(out / "summary.json", summary)
    trainer.close()
    return summary
