"""tokenalign.rollout."""
