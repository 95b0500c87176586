"""Configuration of policy training (``tokenalign train``): one engine, many objectives.

The objective picks the loss and its natural advantage estimator; reward placement is a
separate choice, so fine-grained PPO and sequence-level ("holistic") PPO differ in one
key (``reward.placement: token`` vs ``sequence``), not in code.

| objective   | loss                                   | advantage                         |
|-------------|----------------------------------------|-----------------------------------|
| `ppo`       | clipped surrogate + clipped value loss | GAE over (whitened) token rewards |
| `reinforce` | token REINFORCE + max-entropy (PG 1.4b)| r_t, or reward-to-go              |
| `rloo`      | sequence REINFORCE                     | leave-one-out over K samples      |
| `wmle`      | guidance-weighted MLE (PG 1.4a)        | none (weights from token rewards) |
| `dpg`       | GDC++ distribution matching (SPEC 3.2) | P/q - Z π/q toward the EBM target |
| `fdpg`      | f-DPG (kl / rkl / js / tv)             | -f'(π/p), minus its batch mean    |
| `cdpg`      | conditional DPG (SPEC 3.3)             | per-prompt Z_c over the K samples |
| `phf-*`     | PHF objectives on a scored corpus      | (offline: mle, filter, cond, ul, rwr, awr) |
"""

from __future__ import annotations

import dataclasses
from typing import Literal

from tokenalign.errors import ConfigError
from tokenalign.evaluate.policy_eval import PolicyEvalSettings

from tokenalign.utils.lora import LoraSettings  # re-exported: policy LoRA (the reference is the adapter-free base)

__all__ = ["RewardSettings", "SamplingSettings", "PPOSettings", "LoraSettings", "EvalSettings", "DMSettings", "PHFSettings",
           "TrainConfig", "PHF_OBJECTIVES", "DM_OBJECTIVES"]

DM_OBJECTIVES = ("dpg", "fdpg", "cdpg")
PHF_OBJECTIVES = ("phf-mle", "phf-filter", "phf-cond", "phf-ul", "phf-rwr", "phf-awr")


@dataclasses.dataclass
class RewardSettings:
    """Where rewards come from and where they land on the tokens."""

    # scorer: the task's sequence score; blame: the same score spread over the tokens the
    # scorer blames (gold dense rewards); token_model: a trained token reward model.
    source: Literal["scorer", "blame", "token_model"] = "scorer"
    token_model: str = ""  # a folder written by `tokenalign reward` (source: token_model)
    placement: Literal["token", "segment", "sequence"] = "sequence"
    segment: Literal["line", "sentence"] = "line"
    aggregate: Literal["sum", "avg"] = "sum"  # token model -> sequence score (sequence placement)
    scale: float = 1.0
    plus_scorer: float = 0.0  # token_model: also add this weight x the task scorer's sequence reward on the last token
    # token_model: standardise the token rewards over each rollout batch before the KL penalty
    # ("center": minus their mean; "whiten": also divided by their std, so tokens have unit scale;
    # "sequence": centred, divided by the std of the samples' sums, so a sample's total has unit scale)
    normalize: Literal["none", "center", "whiten", "sequence"] = "none"


@dataclasses.dataclass
class SamplingSettings:
    """Rollout sampling. Training samples at temperature 1 with no truncation by default,
    so the sampled distribution is exactly the policy; log-probs use the same temperature."""

    max_new_tokens: int = 128
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    batch_size: int = 64


@dataclasses.dataclass
class PPOSettings:
    """SPEC 2.3 (FineGrainedRLHF reference settings)."""

    epochs: int = 4
    minibatch_size: int = 16
    clip: float = 0.2
    value_clip: float = 0.2
    gamma: float = 1.0
    lam: float = 0.95
    value_coef: float = 1.0
    value_lr: float = 0.0  # 0: same as lr
    whiten_rewards: bool = True  # after the KL penalty
    whiten_advantages: bool = True


@dataclasses.dataclass
class EvalSettings(PolicyEvalSettings):
    """Held-out evaluation every ``every`` iterations (and at iteration 0 and the end) on the
    first ``prompts`` test prompts: misalignment of samples at the SPEC 3.4 evaluation
    settings, and KL(π || π_ref) from samples at T=1 (see :class:`PolicyEvalSettings`)."""

    every: int = 10
    prompts: int = 64
    seed: int = 4242


@dataclasses.dataclass
class DMSettings:
    """Distribution matching (SPEC 3.1-3.3): the target EBM P(y) = π0(y) b(y) exp(r/β or λ·φ).

    ``target``: ``constraint`` (b = 1 iff the task's score is 0, for pep8 "no violation"),
    ``reward`` (π0 exp(r/β): the posterior that KL-regularised RL matches in reverse KL) or
    ``moments`` (π0 exp(λ·b) with λ fitted so that E_p[b] = ``moments[0]``, by
    self-normalised importance sampling on ``lambda_samples`` samples of π0).
    """

    target: Literal["constraint", "reward", "moments"] = "constraint"
    beta: float = 0.1  # target reward: temperature of exp(r/β)
    moments: list[float] = dataclasses.field(default_factory=lambda: [0.5])
    lambda_samples: int = 256
    divergence: Literal["kl", "rkl", "js", "tv"] = "js"  # fdpg (f-DPG paper: JS a good default)
    baseline: bool = True  # GDC++ / f-DPG / CDPG baselines
    offline: bool = False  # dpg: sample from a frozen proposal q, replaced by π when KL(p||π) < KL(p||q)
    check_every: int = 10  # offline: iterations between proposal checks
    z_momentum: float = 0.0  # dpg Z estimate: 0 = cumulative mean over all samples, else an EMA
    cdpg_eps: float = 1e-4  # CDPG: Z_c = mean (b + eps) π0/π


@dataclasses.dataclass
class PHFSettings:
    """PHF objectives (SPEC 3.4) on a scored corpus; defaults are PHF's PEP8 values.

    ``corpus``: a JSONL file of documents (``{"text": ...}``); "" = the task's own corpus
    (pep8: dedented methods of the standard library's train split). Each document is split
    into segments (``segment``: lines for code, sentences for text) scored by the task's
    scorer; a segment's score applies to its tokens.
    """

    corpus: str = ""
    documents: int = 2000  # at most this many documents (seeded choice)
    segment: Literal["line", "sentence"] = "line"
    max_tokens: int = 256  # documents are cut to this many tokens
    filter_threshold: float = 2.361e-3  # filtering: drop documents whose mean segment score > t
    cond_threshold: float = 0.0  # conditional: <|good|> iff segment score <= t
    drop_prob: float = 0.1  # conditional: a segment gets no control token with this probability
    ul_threshold: float = 0.0  # unlikelihood: aligned iff score <= t (0 is a hard threshold)
    ul_alpha: float = 0.01
    rwr_beta: float = 10.0
    awr_alpha: float = 0.05
    awr_beta: float = 1.0
    max_weight: float = 1000.0  # RWR / AWR weight clamp


@dataclasses.dataclass
class TrainConfig:
    """``tokenalign train``: train a policy on a task's prompts with one objective."""

    out_dir: str = "runs/train"
    task: Literal["pep8"] = "pep8"
    model: str = ""  # policy initialisation; "" = the task's base model
    ref_model: str = ""  # reference for the KL; "" = the initial policy
    objective: Literal["ppo", "reinforce", "rloo", "wmle", "dpg", "fdpg", "cdpg",
                       "phf-mle", "phf-filter", "phf-cond", "phf-ul", "phf-rwr", "phf-awr"] = "ppo"
    reward: RewardSettings = dataclasses.field(default_factory=RewardSettings)
    sampling: SamplingSettings = dataclasses.field(default_factory=SamplingSettings)
    ppo: PPOSettings = dataclasses.field(default_factory=PPOSettings)
    lora: LoraSettings = dataclasses.field(default_factory=LoraSettings)
    eval: EvalSettings = dataclasses.field(default_factory=EvalSettings)
    dm: DMSettings = dataclasses.field(default_factory=DMSettings)
    phf: PHFSettings = dataclasses.field(default_factory=PHFSettings)
    data: str = ""  # wmle: a `supervised` dataset (prompt, response); "" = not used
    iterations: int = 50
    prompts_per_iteration: int = 16
    samples_per_prompt: int = 4
    lr: float = 1e-4
    # Rows per forward pass: rollout scoring, and the non-PPO updates' forward/backward chunks
    # (gradient accumulation, the same gradient); shorter rows share chunks. 0 = all at once.
    update_batch_size: int = 16
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    kl_coef: float = 0.05  # β of the per-token KL penalty (SPEC 2.3: 0.3 fine-grained, 0.2 holistic)
    kl_estimator: Literal["k1", "k3"] = "k1"
    entropy_coef: float = 0.0  # α of the max-entropy term (reinforce; PG: 0.125)
    reward_to_go: bool = False  # reinforce: Σ_{t'>=t} r_t' instead of r_t
    # reinforce: "mean" subtracts the batch's mean token signal, "whiten" also divides by its std (PG: none)
    reinforce_baseline: Literal["none", "mean", "whiten"] = "none"
    wmle_exp: bool = False  # wmle: exp(r) before normalising
    mixed_precision: Literal["auto", "no", "bf16", "fp16"] = "auto"
    save_every: int = 1  # iterations between checkpoints
    seed: int = 0
    stop_after_iterations: int = 0  # stop this invocation early (checkpointed; rerun resumes)

    def validate(self) -> None:
        if self.iterations < 1 or self.prompts_per_iteration < 1 or self.samples_per_prompt < 1:
            raise ConfigError("iterations, prompts_per_iteration and samples_per_prompt must be >= 1")
        if self.objective == "rloo" and self.samples_per_prompt < 2:
            raise ConfigError("objective rloo needs samples_per_prompt >= 2 (the leave-one-out baseline)")
        if not self.lr > 0:
            raise ConfigError(f"lr must be > 0, got {self.lr}")
        if self.sampling.temperature <= 0:
            raise ConfigError("sampling.temperature must be > 0 for training (log-probs are of the sampled distribution)")
        if self.objective == "wmle" and self.reward.normalize != "none":
            raise ConfigError("objective wmle normalises positive token rewards into weights: reward.normalize must be none")
        if self.ppo.minibatch_size < 1 or self.ppo.epochs < 1:
            raise ConfigError("ppo.minibatch_size and ppo.epochs must be >= 1")
        if self.objective in DM_OBJECTIVES:
            if self.sampling.temperature != 1.0 or self.sampling.top_k or self.sampling.top_p != 1.0:
                raise ConfigError(f"objective {self.objective} matches distributions: sample at temperature 1 without top-k/top-p")
            if self.objective == "cdpg" and self.samples_per_prompt < 2:
                raise ConfigError("objective cdpg estimates Z_c per prompt: samples_per_prompt >= 2")
            if self.dm.target == "reward" and not self.dm.beta > 0:
                raise ConfigError(f"dm.beta must be > 0, got {self.dm.beta}")
            if self.dm.offline and self.objective != "dpg":
                raise ConfigError("dm.offline applies to objective dpg")
            if self.objective == "cdpg" and self.dm.target != "constraint":
                raise ConfigError("objective cdpg matches π0(y|c) b(y, c): dm.target must be constraint")
            if self.dm.target == "moments" and len(self.dm.moments) != 1:
                raise ConfigError("dm.moments: one desired moment (of the constraint feature)")
        if self.objective in PHF_OBJECTIVES:
            if not 0.0 <= self.phf.drop_prob <= 1.0:
                raise ConfigError(f"phf.drop_prob must be in [0, 1], got {self.phf.drop_prob}")
            if not (self.phf.rwr_beta > 0 and self.phf.awr_beta > 0 and self.phf.max_weight > 0):
                raise ConfigError("phf.rwr_beta, phf.awr_beta and phf.max_weight must be > 0")
            if not 0.0 <= self.phf.awr_alpha <= 1.0:
                raise ConfigError(f"phf.awr_alpha must be in [0, 1], got {self.phf.awr_alpha}")
            if self.lora.enabled and self.objective == "phf-cond":
                raise ConfigError("phf-cond adds control tokens (new embedding rows): train without LoRA")

    def validate_sources(self) -> None:
        """Checks of the built-in reward sources and data (a custom RewardSource skips these)."""
        self.validate()
        if self.objective in DM_OBJECTIVES and self.reward.source != "scorer":
            raise ConfigError(f"objective {self.objective}: the constraint b(y) is the task scorer's (score 0 = no violation): "
                              "reward.source must be scorer")
        if self.objective == "wmle" and not self.data:
            raise ConfigError("objective wmle trains on a supervised dataset: set data=FILE (prompt, completion)")
        if self.reward.placement in ("token", "segment") and self.reward.source == "scorer":
            raise ConfigError(f"reward.placement {self.reward.placement} needs per-token rewards: "
                              "reward.source=blame or token_model")
        if self.objective == "wmle" and self.reward.source != "token_model":
            raise ConfigError("objective wmle weights tokens by a token reward model: reward.source=token_model")
        if self.reward.source == "token_model" and not self.reward.token_model:
            raise ConfigError("reward.source token_model needs reward.token_model=DIR (from `tokenalign reward`)")
