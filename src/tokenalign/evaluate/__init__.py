"""tokenalign.evaluate."""
