"""tokenalign.policy."""
