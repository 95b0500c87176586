"""tokenalign.policy: one training engine for PPO (token / segment / sequence rewards),
token REINFORCE, RLOO and guidance-weighted MLE, and the alternating loop."""

from tokenalign.policy.config import TrainConfig
from tokenalign.policy.trainer import PolicyTrainer, Rollout

__all__ = ["TrainConfig", "PolicyTrainer", "Rollout"]
