"""tokenalign.policy: the policy training engine (one trainer for every objective)."""

from tokenalign.policy.config import TrainConfig
from tokenalign.policy.trainer import PolicyTrainer
from tokenalign.rollout.batch import Rollout

__all__ = ["TrainConfig", "PolicyTrainer", "Rollout"]
