"""tokenalign.rewards."""
