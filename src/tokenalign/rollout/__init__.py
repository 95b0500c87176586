"""Sampling from a causal or encoder-decoder LM, and the per-token log-probs of an LM on the samples."""
