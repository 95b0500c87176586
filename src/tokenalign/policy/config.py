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
"""

from __future__ import annotations

import dataclasses
from typing import Literal

from tokenalign.errors import ConfigError
from tokenalign.evaluate.policy_eval import PolicyEvalSettings

__all__ = ["RewardSettings", "SamplingSettings", "PPOSettings", "LoraSettings", "EvalSettings", "TrainConfig"]


@dataclasses.dataclass
class RewardSettings:
    """Where rewards come from and where they land on the tokens."""

    source: Literal["scorer", "token_model"] = "scorer"
    token_model: str = ""  # a folder written by `tokenalign reward` (source: token_model)
    placement: Literal["token", "segment", "sequence"] = "sequence"
    segment: Literal["line", "sentence"] = "line"
    aggregate: Literal["sum", "avg"] = "sum"  # token model -> sequence score (sequence placement)
    scale: float = 1.0
    plus_scorer: float = 0.0  # token_model: also add this weight x the task scorer's sequence reward on the last token


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
class LoraSettings:
    """LoRA adapters via peft on the policy (the reference model is the adapter-free base)."""

    enabled: bool = False
    r: int = 8
    alpha: int = 16
    dropout: float = 0.0
    target_modules: list[str] = dataclasses.field(default_factory=list)  # []: peft's default for the model


@dataclasses.dataclass
class EvalSettings(PolicyEvalSettings):
    """Held-out evaluation every ``every`` iterations (and at iteration 0 and the end) on the
    first ``prompts`` test prompts: misalignment of samples at the SPEC 3.4 evaluation
    settings, and KL(π || π_ref) from samples at T=1 (see :class:`PolicyEvalSettings`)."""

    every: int = 10
    prompts: int = 64
    seed: int = 4242


@dataclasses.dataclass
class TrainConfig:
    """``tokenalign train``: train a policy on a task's prompts with one objective."""

    out_dir: str = "runs/train"
    task: Literal["pep8"] = "pep8"
    model: str = ""  # policy initialisation; "" = the task's base model
    ref_model: str = ""  # reference for the KL; "" = the initial policy
    objective: Literal["ppo", "reinforce", "rloo", "wmle"] = "ppo"
    reward: RewardSettings = dataclasses.field(default_factory=RewardSettings)
    sampling: SamplingSettings = dataclasses.field(default_factory=SamplingSettings)
    ppo: PPOSettings = dataclasses.field(default_factory=PPOSettings)
    lora: LoraSettings = dataclasses.field(default_factory=LoraSettings)
    eval: EvalSettings = dataclasses.field(default_factory=EvalSettings)
    data: str = ""  # wmle: a `supervised` dataset (prompt, response); "" = not used
    iterations: int = 50
    prompts_per_iteration: int = 16
    samples_per_prompt: int = 4
    lr: float = 1e-4
    update_batch_size: int = 0  # non-PPO objectives: rows per forward/backward chunk (gradient accumulation); 0 = all
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
        if self.ppo.minibatch_size < 1 or self.ppo.epochs < 1:
            raise ConfigError("ppo.minibatch_size and ppo.epochs must be >= 1")

    def validate_sources(self) -> None:
        """Checks of the built-in reward sources and data (a custom RewardSource skips these)."""
        self.validate()
        if self.objective == "wmle" and not self.data:
            raise ConfigError("objective wmle trains on a supervised dataset: set data=FILE (prompt, completion)")
        if self.reward.placement in ("token", "segment") and self.reward.source != "token_model":
            raise ConfigError(f"reward.placement {self.reward.placement} needs per-token rewards: reward.source=token_model")
        if self.objective == "wmle" and self.reward.source != "token_model":
            raise ConfigError("objective wmle weights tokens by a token reward model: reward.source=token_model")
        if self.reward.source == "token_model" and not self.reward.token_model:
            raise ConfigError("reward.source token_model needs reward.token_model=DIR (from `tokenalign reward`)")
