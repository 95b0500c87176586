"""Shared helpers without task knowledge: I/O, logging, model loading, checkpoints, metrics logs, kernels."""
