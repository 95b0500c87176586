"""Bridges that feed tokenalign's token rewards and advantages to other training engines (verl, TRL)."""
