"""Evaluation: misalignment metrics, held-out policy evaluation, localization AUC, red-teaming."""

from tokenalign.evaluate.metrics import (
    distinct_n,
    expected_max,
    fraction_above,
    kl_from_logprobs,
    mean_length,
    self_bleu,
    sentence_bleu,
    win_rate,
)

__all__ = [
    "distinct_n",
    "sentence_bleu",
    "self_bleu",
    "expected_max",
    "fraction_above",
    "win_rate",
    "kl_from_logprobs",
    "mean_length",
]
