"""Configuration of policy training (``tokenalign train``): one engine, many objectives.

The objective (a plug-in, :mod:`tokenalign.objectives`) picks the data, the training
signal and the loss; where rewards land on the tokens is a separate choice, so
fine-grained PPO and sequence-level ("holistic") PPO differ in one key
(``reward.placement: token`` vs ``sequence``), not in code.

| objective   | loss                                      | signal                            |
|-------------|-------------------------------------------|-----------------------------------|
| `ppo`       | clipped surrogate + clipped value loss    | GAE over (whitened) token rewards |
| `reinforce` | token REINFORCE + max-entropy (guidance)  | r_t, or reward-to-go              |
| `rloo`      | sequence REINFORCE                        | leave-one-out over K samples      |
| `wmle`      | guidance-weighted MLE                     | weights from token rewards        |
| `dpo`       | DPO on preference pairs (offline)         | β log π/π_ref of chosen - rejected |
| `dpg`       | GDC++ distribution matching               | P/q - Z π/q toward the EBM target |
| `fdpg`      | f-DPG (kl / rkl / js / tv)                | -f'(π/p), minus its batch mean    |
| `cdpg`      | conditional DPG                           | per-prompt Z_c over the K samples |
| `phf-*`     | PHF objectives on a scored corpus         | (offline: mle, filter, cond, ul, rwr, awr) |
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar, Literal

from tokenalign.errors import ConfigError
from tokenalign.evaluate.policy_eval import PolicyEvalSettings
from tokenalign.rollout.generate import SamplingSettings
from tokenalign.utils.tracking import resolve_report_to

from tokenalign.utils.lora import LoraSettings  # re-exported: policy LoRA (the reference is the adapter-free base)

__all__ = ["RewardSettings", "SamplingSettings", "LoraSettings", "EvalSettings", "TrainConfig"]


@dataclasses.dataclass
class RewardSettings:
    """Where rewards come from and where they land on the tokens."""

    # scorer: the scorer's sequence score; constraint: distribution matching's b(y) as a reward,
    # reward.scale if the scorer's misalignment is 0 (pep8: compiles, no violation) else 0 (RL on
    # the same signal as cdpg); blame: the scorer's score spread over the tokens it blames (gold
    # dense rewards); token_model: a trained token reward model; dpo: a
    # DPO-trained model's log-ratio to its reference on every token (RTO, Zhong et al. 2024);
    # guidance: the token guidance r_φ that `tokenalign align` learns (that job sets it); or
    # package.module:attribute, a function that builds a reward source (see policy/rewards.py)
    source: str = "scorer"
    token_model: str = ""  # a folder written by `tokenalign reward` (source: token_model)
    # source dpo: the DPO-trained policy (the model/ folder of `tokenalign train --set objective=dpo`),
    # its reference ("" = the run's initial model, the policy's base), the scale β of
    # r_t = β log π_dpo(y_t|s_t)/π_ref(y_t|s_t) (RTO's β1; its authors start at 0.05), and a clip
    # of each r_t to [-clip, clip] (0 = off; RTO's released code uses 0.05)
    model: str = ""
    ref_model: str = ""
    beta: float = 0.05
    clip: float = 0.0
    # where rewards land: every token its own (token), a segment's sum on its last token
    # (segment), or the sequence score on the last token (sequence: holistic RL)
    placement: Literal["token", "segment", "sequence"] = "sequence"
    segment: Literal["line", "sentence"] = "line"  # what a segment is (placement: segment)
    # token model -> sequence score (sequence placement): the sum or mean of its token rewards, or
    # the last token's alone (a model learned with aggregator "last" is a sequence reward model)
    aggregate: Literal["sum", "avg", "last"] = "sum"
    scale: float = 1.0  # every reward is multiplied by this
    # token_model, dpo: also add this weight x the task scorer's sequence reward on the last token
    # (RTO's sparse sentence-level term, its β3 = 1)
    plus_scorer: float = 0.0
    # token_model / guidance: standardise the token rewards over each rollout batch before the KL penalty
    # ("center": minus their mean; "whiten": also divided by their std, so tokens have unit scale;
    # "sequence": centred, divided by the std of the samples' sums, so a sample's total has unit scale)
    normalize: Literal["none", "center", "whiten", "sequence"] = "none"


@dataclasses.dataclass
class EvalSettings(PolicyEvalSettings):
    """Held-out evaluation every ``every`` iterations (and at iteration 0 and the end) on the
    first ``prompts`` test prompts: misalignment of samples at the PHF paper's evaluation
    settings (temperature 0.7, top-p 0.9), and KL(π || π_ref) from samples at T=1 (see
    :class:`PolicyEvalSettings`)."""

    every: int = 10  # iterations between evaluations (0: none)
    prompts: int = 64  # the first this many held-out prompts (see TrainConfig.eval_prompts)
    seed: int = 4242  # sampling seed of every evaluation (the same draws each time)


def _objective_section(name: str) -> tuple[str | None, type | None, frozenset[str]]:
    """The config key and settings class of objective ``name``, and the keys of the other
    built-in objectives' sections (for :func:`tokenalign.config.from_dict`)."""
    from tokenalign.objectives import OBJECTIVES, objective_class

    cls = objective_class(name)
    others = {c.section for n in OBJECTIVES.names() if (c := OBJECTIVES.get(n)).section and c.section != cls.section}
    return cls.section, cls.Settings, frozenset(others)


@dataclasses.dataclass
class TrainConfig:
    """``tokenalign train``: train a policy on a task's prompts with one objective.

    The objective's own settings sit under its section key (``ppo:``, ``reinforce:``,
    ``wmle:``, ``dpo:``, ``dm:``, ``phf:``; ``rloo`` has none): in Python, ``objective_settings``.
    """

    MOVED_KEYS: ClassVar[dict[str, str]] = {
        "reward_to_go": "reinforce.reward_to_go (objective wmle: wmle.reward_to_go)",
        "reinforce_baseline": "reinforce.baseline", "wmle_exp": "wmle.exp", "data": "wmle.data"}

    out_dir: str = "runs/train"  # the run folder (a rerun with the same folder resumes)
    task: str = "pep8"  # a registered task or package.module:attribute (prompts, stop strings, base model, scorer)
    # the sequence-level preference source that scores samples: a registered scorer,
    # package.module:attribute (a Scorer class or instance, a TRL reward function
    # fn(prompts, completions, **kwargs) -> rewards, or fn(prompt, completion) -> misalignment),
    # or a reward-model folder (a sequence classifier, or a `tokenalign reward` model);
    # "" = the task's own scorer
    scorer: str = ""
    # training prompts: a file or dataset with a `prompt` field, text or a list of chat messages
    # (JSONL, JSON, CSV, Parquet, a save_to_disk folder, a hub dataset name); "" = the task's train split
    prompts: str = ""
    prompts_split: str = "train"  # the split of `prompts` when it is a dataset with splits
    # held-out prompts of the periodic evaluation (the first eval.prompts of them), as `prompts`;
    # "" = the `eval_prompts_split` split of `prompts` when it has one, else eval.prompts prompts
    # held out of `prompts` at random (seed), else (no `prompts`) the task's test split
    eval_prompts: str = ""
    eval_prompts_split: str = "test"  # the split of `eval_prompts` (or of `prompts`) to evaluate on
    model: str = ""  # policy initialisation; "" = the task's base model
    ref_model: str = ""  # reference for the KL; "" = the initial policy
    # a registered objective (ppo, reinforce, rloo, wmle, dpo, dpg, fdpg, cdpg, phf-mle, phf-filter,
    # phf-cond, phf-ul, phf-rwr, phf-awr) or package.module:Class (an Objective subclass)
    objective: str = "ppo"
    reward: RewardSettings = dataclasses.field(default_factory=RewardSettings)  # where rewards come from and land
    # rollout sampling: temperature 1 without truncation, so the samples are exactly the policy's
    sampling: SamplingSettings = dataclasses.field(default_factory=SamplingSettings)
    lora: LoraSettings = dataclasses.field(default_factory=LoraSettings)  # adapters; the reference is the base
    eval: EvalSettings = dataclasses.field(default_factory=EvalSettings)
    iterations: int = 50  # policy updates (each on one batch: a rollout, or rows of the objective's data)
    prompts_per_iteration: int = 16  # training prompts per iteration (over all processes)
    samples_per_prompt: int = 4  # K responses sampled per prompt
    lr: float = 1e-4  # AdamW learning rate of the policy
    # Rows per forward pass: rollout scoring, and the non-PPO updates' forward/backward chunks
    # (gradient accumulation, the same gradient); shorter rows share chunks. 0 = all at once.
    update_batch_size: int = 16
    weight_decay: float = 0.0  # AdamW weight decay
    grad_clip: float = 1.0  # clip the gradient norm to this (0: no clipping)
    # β of the per-token KL penalty (FineGrainedRLHF: 0.3 fine-grained, 0.2 holistic PPO)
    kl_coef: float = 0.05
    kl_estimator: Literal["k1", "k3"] = "k1"  # per-token KL estimate: log π/π_ref (k1) or Schulman's k3
    # α of the max-entropy term of ppo, reinforce, rloo and distribution matching
    # (the guidance paper's token REINFORCE: 0.125)
    entropy_coef: float = 0.0
    mixed_precision: Literal["auto", "no", "bf16", "fp16"] = "auto"  # auto: bf16 where the hardware has it
    # With LoRA on the last blocks only: run the frozen embeddings and lower blocks once per
    # rollout and start every update pass (policy and value model) from their output, the same
    # forward cut in two (Llama-family models, one process; others run whole: policy/trunk.py)
    reuse_frozen_trunk: bool = True
    save_every: int = 1  # iterations between checkpoints
    seed: int = 0  # every random choice derives from (seed, iteration): the same seed, the same run
    stop_after_iterations: int = 0  # stop this invocation early (checkpointed; rerun resumes)
    # End the run early once the rollouts' mean KL(π || π_ref) per sample (the metrics row's
    # `kl`) has exceeded this in `stop_kl_patience` iterations, counted over the whole run, not
    # necessarily in a row (FineGrainedRLHF: 10 and 5). The run then finishes as if its last
    # iteration were the final one: evaluated, checkpointed, model/ written, and summary.json
    # records `stopped_early` (the iteration and why); a rerun does not train further. 0 = off.
    stop_kl: float = 0.0
    stop_kl_patience: int = 1
    # experiment trackers that get every metrics row (accelerate's): none, tensorboard, wandb, mlflow,
    # several as a list or "a,b", or all (those installed). Files go under out_dir: tensorboard/,
    # wandb/ (offline unless WANDB_MODE is set), mlruns/ (unless MLFLOW_TRACKING_URI is set)
    report_to: str | list[str] = "none"
    # a progress bar over iterations (main process); without a logging setup (Python, a notebook)
    # the metric lines print above it
    progress: bool = True
    # the objective's own settings (its Settings dataclass); None = its defaults
    objective_settings: Any = dataclasses.field(
        default=None, metadata={"selector": "objective", "section_for": _objective_section})

    def __post_init__(self) -> None:
        settings_cls = self.objective_class.Settings
        if settings_cls is None:
            self.objective_settings = None
        elif not isinstance(self.objective_settings, settings_cls):
            if self.objective_settings is not None and not dataclasses.is_dataclass(self.objective_settings):
                raise ConfigError(f"objective_settings of {self.objective}: expected {settings_cls.__name__}")
            # a fresh objective (or one of another family after dataclasses.replace): its defaults
            self.objective_settings = settings_cls()

    @property
    def objective_class(self):
        from tokenalign.objectives import objective_class

        return objective_class(self.objective)

    def validate(self) -> None:
        if self.iterations < 1 or self.prompts_per_iteration < 1 or self.samples_per_prompt < 1:
            raise ConfigError("iterations, prompts_per_iteration and samples_per_prompt must be >= 1")
        if not self.lr > 0:
            raise ConfigError(f"lr must be > 0, got {self.lr}")
        if self.stop_kl < 0 or self.stop_kl_patience < 1:
            raise ConfigError(f"stop_kl must be >= 0 and stop_kl_patience >= 1, got {self.stop_kl} and {self.stop_kl_patience}")
        if self.stop_kl and not self.objective_class.reports_kl:
            raise ConfigError(f"stop_kl: objective {self.objective} trains on a dataset, not on the policy's samples "
                              "(no KL to the reference is measured); set stop_kl=0")
        if self.sampling.temperature <= 0:
            raise ConfigError("sampling.temperature must be > 0 for training (log-probs are of the sampled distribution)")
        resolve_report_to(self.report_to)
        validate = getattr(self.objective_settings, "validate", None)
        if callable(validate):
            validate()
        self.objective_class.check_config(self)

    def validate_sources(self) -> None:
        """Checks of the built-in reward sources and data (a custom RewardSource skips these)."""
        self.validate()
        self.objective_class.check_sources(self)
        if self.reward.placement in ("token", "segment") and self.reward.source in ("scorer", "constraint"):
            raise ConfigError(f"reward.placement {self.reward.placement} needs per-token rewards: "
                              "reward.source=blame, token_model or dpo")
        if self.reward.source == "token_model" and not self.reward.token_model:
            raise ConfigError("reward.source token_model needs reward.token_model=DIR (from `tokenalign reward`)")
        if self.reward.source == "dpo":
            if not self.reward.model:
                raise ConfigError("reward.source dpo needs reward.model=DIR (a DPO-trained policy: "
                                  "the model/ folder of `tokenalign train --set objective=dpo`)")
            if not self.reward.beta > 0 or self.reward.clip < 0:
                raise ConfigError(f"reward.beta must be > 0 and reward.clip >= 0, got {self.reward.beta} and {self.reward.clip}")
